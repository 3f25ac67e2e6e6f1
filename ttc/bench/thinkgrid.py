"""The thinking grid of a bench (`--think-budgets 0,256,1024 --budgets 1,4,16`): longer thinking against more
traces, at the tokens each really spent.

Each think budget T turns every strategy S into the label `S:think=T` (a strategy option the Solver reads as
the run's think budget), so the grid is ordinary bench cells: records keyed by label and budget, resumed and
derived (majority@4 from majority@16's first traces, at the same T) like any other. From the summary:

    table   one row per think budget, one column per budget: accuracy (95% interval) and the mean tokens a
            problem cost (thinking and answer, every trace)
    plot    DIR/accuracy_vs_thinking.png: accuracy against mean tokens per problem; one line for longer
            thinking (a single trace at each T: sequential), one per T for more traces (parallel)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import UsageError

PLOT_FILE = "accuracy_vs_thinking.png"
_LABEL = re.compile(r"^(?P<base>.*?):think=(?P<t>\d+)(?P<rest>(:.*)?)$")


def parse_think_budgets(text: str) -> list[int]:
    """'0,256,1024' -> [0, 256, 1024] (sorted, unique); whole numbers >= 0 only."""
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise UsageError(
                f"--think-budgets takes whole numbers >= 0 separated by commas (e.g. 0,256,1024), got '{text}'"
            )
        out.add(int(part))
    if not out:
        raise UsageError("--think-budgets is empty")
    return sorted(out)


def expand(strategies: list[str], think_budgets: list[int]) -> list[str]:
    """Every strategy at every think budget, as labels S:think=T."""
    for s in strategies:
        if _LABEL.match(s):
            raise UsageError(f"strategy '{s}' names its own think budget; leave it out or drop --think-budgets")
    return [f"{s}:think={t}" for s in strategies for t in think_budgets]


def split_label(label: str) -> tuple[str, int] | None:
    """'majority:think=256' -> ('majority', 256); None for a label without a think budget."""
    m = _LABEL.match(label)
    return None if m is None else (m["base"] + (m["rest"] or ""), int(m["t"]))


def grid(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary's cells that carry a think budget: strategy, think_budget, budget, accuracy, interval, tokens."""
    out = []
    for r in summary.get("by_budget", []):
        parts = split_label(r["strategy"])
        if parts is not None:
            out.append({**r, "strategy": parts[0], "think_budget": parts[1], "label": r["strategy"]})
    return out


def print_grid(console, cells: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from .summary import INTERVAL_NOTE, _pct, show

    for base in dict.fromkeys(c["strategy"] for c in cells):
        mine = [c for c in cells if c["strategy"] == base]
        budgets = sorted({c["budget"] for c in mine})
        by = {(c["think_budget"], c["budget"]): c for c in mine}
        t = Table(
            title=f"{base}: accuracy, % ({INTERVAL_NOTE}) / mean tokens per problem, by think budget x budget",
            title_justify="left",
        )
        t.add_column("think budget", justify="right")
        for b in budgets:
            t.add_column(str(b), justify="right")
        for tb in sorted({c["think_budget"] for c in mine}):
            row = []
            for b in budgets:
                c = by.get((tb, b))
                row.append("-" if c is None else f"{_pct(c)} / {c['mean_tokens']:.0f}")
            t.add_row(str(tb), *row)
        show(console, t)


def plot_grid(out: Path, cells: list[dict[str, Any]], title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import _axis, _errorbar

    bases = list(dict.fromkeys(c["strategy"] for c in cells))
    fig, axes = plt.subplots(1, len(bases), figsize=(6.5 * len(bases), 4.8), dpi=110, squeeze=False)
    for ax, base in zip(axes[0], bases):
        mine = [c for c in cells if c["strategy"] == base]
        one = sorted((c for c in mine if c["budget"] == 1), key=lambda c: c["think_budget"])
        if one:
            _errorbar(ax, [c["mean_tokens"] for c in one], one, "longer thinking (1 trace, think budget grows)")
        for tb in sorted({c["think_budget"] for c in mine}):
            line = sorted((c for c in mine if c["think_budget"] == tb), key=lambda c: c["budget"])
            if len(line) > 1:
                _errorbar(ax, [c["mean_tokens"] for c in line], line, f"more traces at think budget {tb}")
        ax.set_xscale("log")
        _axis(ax, f"{base}{': ' + title if title else ''}", "mean tokens per problem (thinking + answer, all traces)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / PLOT_FILE
    fig.savefig(path, metadata={"Description": "accuracy against tokens: longer thinking vs more traces"})
    plt.close(fig)
    return path
