"""The package's shape: imports point down, never in a circle; each file is small and says what it is for.

Every import in ttc/ counts, at module level or inside a function, and those under `if TYPE_CHECKING:` too
(a circle of type hints is still a circle a reader has to untangle). `from pkg import name` is an edge to
the module pkg.name when that is a module, else to pkg itself (its __init__).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "ttc"
MAX_LINES = 400

# layer -> what it must never import
FORBIDDEN = {
    "ttc.engine": ("ttc.strategies", "ttc.prm", "ttc.policy", "ttc.bench", "ttc.cli", "ttc.solve"),
    "ttc.strategies": ("ttc.cli", "ttc.bench", "ttc.policy", "ttc.solve"),
    "ttc.prm": ("ttc.strategies", "ttc.policy", "ttc.bench", "ttc.cli", "ttc.solve"),
    "ttc.answers": ("ttc.engine", "ttc.strategies", "ttc.prm", "ttc.policy", "ttc.bench", "ttc.cli", "ttc.solve"),
}


def modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]
            for t in targets:
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path a -> b -> ... -> a, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w) :] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_no_import_circle_anywhere_in_the_package():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_circle_finder_finds_a_circle():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_import_nothing_from_the_layers_above(layer):
    bad = [
        f"{m} imports {d}"
        for m, deps in sorted(import_graph().items())
        if m == layer or m.startswith(layer + ".")
        for d in sorted(deps)
        if any(d == f or d.startswith(f + ".") for f in FORBIDDEN[layer])
    ]
    assert not bad, "; ".join(bad)


def test_no_file_over_the_line_limit():
    long = {
        str(p.relative_to(PKG.parent)): n
        for p, _ in modules().values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_every_module_opens_with_a_docstring_and_every_folder_says_what_it_is_for():
    missing = [
        str(p.relative_to(PKG.parent)) for p, _ in modules().values() if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert not missing, f"no docstring: {missing}"
    folders = [d for d in PKG.rglob("*") if d.is_dir() and any(d.glob("*.py"))]
    assert all((d / "__init__.py").is_file() for d in folders), [
        str(d) for d in folders if not (d / "__init__.py").is_file()
    ]


def test_documented_entry_points_still_import():
    """`python -m ttc.train`, `python -m ttc.arith`, `python -m ttc.flashbench` and the `ttc` script's
    `ttc.cli:main` are documented; their modules must stay importable where the README names them."""
    import importlib

    for name in ("ttc.cli", "ttc.train.__main__", "ttc.arith", "ttc.flashbench", "ttc.engine.llama", "ttc.record"):
        spec = importlib.util.find_spec(name)
        assert spec is not None, name
    from ttc.arith import evaluate
    from ttc.cli import main

    assert callable(main) and evaluate("37+48-19") == 66
