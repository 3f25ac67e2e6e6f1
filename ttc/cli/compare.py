"""`ttc compare`: several strategies on one problem at one budget, side by side, with what each spent."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..answers import extract_gold, is_equivalent
from ..errors import UsageError
from ..record import Result
from ..solve import SamplingOverrides, Solver
from ..strategies import get_strategy
from ..strategies.base import as_number


def parse_list(text: str | None, what: str) -> list[str]:
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    if not items:
        raise UsageError(f"--{what} needs a comma-separated list")
    return items


def parse_options(pairs: list[str] | None) -> dict:
    """`--opt key=value` pairs; values that read as numbers become numbers."""
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--opt takes key=value, got '{pair}'")
        out[key.strip()] = as_number(value.strip())
    return out


def run_compare(
    solver: Solver,
    problem: str,
    strategies: list[str],
    budget: int,
    seed: int,
    sampling: SamplingOverrides,
    options: dict,
    gold: str | None,
    console: Console | None,
) -> list[tuple[Result, bool | None]]:
    for name in strategies:
        get_strategy(name)
    gold_answer = extract_gold(gold) if gold is not None else None
    rows = []
    for name in strategies:
        if console is not None and console.is_terminal:
            with console.status(f"{name} at budget {budget}"):
                result = solver.solve(problem, name, budget, seed=seed, sampling=sampling, options=options)
        else:
            result = solver.solve(problem, name, budget, seed=seed, sampling=sampling, options=options)
        correct = None if gold_answer is None else is_equivalent(result.answer, gold_answer)
        rows.append((result, correct))
    if console is not None:
        console.print(table(rows, budget, gold_answer))
    return rows


def table(rows: list[tuple[Result, bool | None]], budget: int, gold: str | None) -> Table:
    t = Table(title=f"budget {budget}" + (f", gold {gold}" if gold is not None else ""))
    for col in ("strategy", "answer", "correct", "score / votes", "generations", "gen tokens", "PRM tokens", "wall s"):
        t.add_column(col, justify="left" if col in ("strategy", "answer") else "right")
    for r, ok in rows:
        d = r.details
        if "votes" in d:
            support = f"{d['votes'].get(r.answer, 0)}/{len(r.candidates)}" if r.answer is not None else "-"
        elif "weights" in d and r.answer is not None:
            support = f"{d['weights'].get(r.answer, 0):.2f}"
        elif "best_score" in d:
            support = f"{d['best_score']:.3f}"
        else:
            support = "-"
        mark = "" if ok is None else ("yes" if ok else "no")
        s = r.spent
        t.add_row(
            r.strategy, str(r.answer), mark, support, f"{s.generations:g}", str(s.tokens_generated), str(s.prm_tokens),
            f"{s.wall_s:.2f}",
        )  # fmt: skip
    return t
