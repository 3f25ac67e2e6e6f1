"""`ttc bench --paired A@N,B@M`: two cells of a run (strategy x budget) compared on the same problems.

Accuracies of two cells measured on the same problems are correlated (the easy problems are easy for
both), so their difference is judged on the problems where they disagree: b (only the first right) and c
(only the second right). Each comparison gives the difference in accuracy with its 95% interval
(Newcombe's hybrid score interval for paired proportions, `stats.Paired.interval`), b and c, and the
exact McNemar p-value. It goes in summary.json under `paired` and as one line on stderr.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import UsageError
from .stats import PAIRED_INTERVAL, pair

Cell = tuple[str, int]  # (strategy label, budget)
EXAMPLE = "e.g. --paired auto@16,weighted-best-of-n@64"


def cell_name(cell: Cell) -> str:
    return f"{cell[0]}@{cell[1]}"


def parse_cell(text: str, spec: str) -> Cell:
    strategy, at, budget = text.strip().rpartition("@")
    budget = budget.strip()
    if not at or not strategy.strip() or not budget.isdigit() or int(budget) < 1:
        raise UsageError(f"--paired '{spec}': '{text.strip()}' is not STRATEGY@BUDGET ({EXAMPLE})")
    return strategy.strip(), int(budget)


def parse_pairs(specs: Iterable[str] | None) -> list[tuple[Cell, Cell]]:
    """['auto@16,weighted-best-of-n@64'] -> [(('auto', 16), ('weighted-best-of-n', 64))]; usage errors."""
    out = []
    for spec in specs or []:
        parts = spec.split(",")
        if len(parts) != 2:
            raise UsageError(f"--paired '{spec}': give two cells, STRATEGY@BUDGET,STRATEGY@BUDGET ({EXAMPLE})")
        a, b = (parse_cell(p, spec) for p in parts)
        if a == b:
            raise UsageError(f"--paired '{spec}': a cell compared with itself; name two different cells")
        out.append((a, b))
    return out


def check_cells(pairs: list[tuple[Cell, Cell]], cells: Iterable[Cell], where: str) -> None:
    """Every cell named by --paired is one of `cells` (those of the run); else a one-line usage error."""
    known = list(dict.fromkeys(cells))
    for a, b in pairs:
        for c in (a, b):
            if c not in known:
                listed = ", ".join(cell_name(k) for k in known[:12]) + (", ..." if len(known) > 12 else "")
                raise UsageError(f"--paired: {cell_name(c)} is not a cell of {where} (its cells: {listed})")


def compare_cells(rows: list[dict], pairs: list[tuple[Cell, Cell]]) -> list[dict]:
    """One entry per pair, on the problems both cells have a record for (`store.summary_row`s)."""
    wanted = {c for ab in pairs for c in ab}
    outcomes: dict[Cell, dict[str, bool]] = {c: {} for c in wanted}
    for r in rows:
        key = (r["strategy"], r["budget"])
        if key in outcomes:
            outcomes[key][r["id"]] = bool(r["correct"])
    out = []
    for a, b in pairs:
        p = pair(outcomes[a], outcomes[b])
        low, high = p.interval()
        out.append({
            "first": cell_name(a), "second": cell_name(b), "n": p.n,
            "accuracy_first": round(p.accuracy_a, 6), "accuracy_second": round(p.accuracy_b, 6),
            "difference": round(p.difference, 6), "difference_low": round(low, 6), "difference_high": round(high, 6),
            "both_right": p.both, "only_first_right": p.b, "only_second_right": p.c, "neither_right": p.neither,
            "mcnemar_p": round(p.p_value, 6), "interval": PAIRED_INTERVAL,
        })  # fmt: skip
    return out


def describe(e: dict) -> str:
    """The stderr line of one comparison."""
    if e["n"] == 0:
        return f"paired {e['first']} vs {e['second']}: no problem has a record in both cells"
    return (
        f"paired {e['first']} vs {e['second']} on {e['n']} problems: {100 * e['accuracy_first']:.1f}% vs "
        f"{100 * e['accuracy_second']:.1f}%, difference {100 * e['difference']:+.1f} points (95% interval "
        f"{100 * e['difference_low']:+.1f} to {100 * e['difference_high']:+.1f}, Newcombe); "
        f"b={e['only_first_right']} only {e['first']} right, c={e['only_second_right']} only {e['second']} right; "
        f"exact McNemar p{_p_value(e['mcnemar_p'])}"
    )


def _p_value(p: float) -> str:
    """'=0.152', or '<0.001' where the value is smaller (it is stored rounded)."""
    return "<0.001" if p < 0.001 else f"={p:.3g}"
