"""Summaries of a bench: accuracy per strategy x budget, and per difficulty value when the data has one.

Every accuracy carries its 95% Wilson score interval (`accuracy_low`, `accuracy_high`; `stats.wilson`).

`summarize(rows)` works on `store.summary_row`s (every line of samples.jsonl), so a summary written after a
resume covers the whole run. `write_summaries` rewrites DIR/summary.json and DIR/summary.csv whole;
`print_tables` shows the same numbers as Rich tables on stderr.

summary.csv is tidy: one row per (group, value, strategy, budget), where group is `all` (value empty) or a
difficulty key (`level`, `subject`, `ops`) and value one of its values.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from .datasets import DIFFICULTY_KEYS
from .stats import ACCURACY_INTERVAL, wilson
from .store import write_atomic

INTERVAL_NOTE = "95% Wilson interval"
WIDE = 240  # columns for tables written off a terminal
CSV_COLUMNS = (
    "group", "value", "strategy", "budget", "n", "correct", "accuracy", "accuracy_low", "accuracy_high",
    "mean_tokens", "mean_wall_s", "mean_generations",
)  # fmt: skip


def _cell(rows: list[dict]) -> dict[str, Any]:
    n = len(rows)
    correct = sum(r["correct"] for r in rows)
    low, high = wilson(correct, n)
    return {
        "n": n,
        "correct": correct,
        "accuracy": round(correct / n, 6) if n else 0.0,
        "accuracy_low": round(low, 6),
        "accuracy_high": round(high, 6),
        "mean_tokens": round(sum(r["tokens"] for r in rows) / n, 3) if n else 0.0,
        "mean_wall_s": round(sum(r["wall_s"] for r in rows) / n, 6) if n else 0.0,
        "mean_generations": round(sum(r["generations"] for r in rows) / n, 3) if n else 0.0,
    }


def _value_order(v: Any) -> tuple:
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def summarize(rows: list[dict], strategies: list[str] | None = None) -> dict[str, Any]:
    """Accuracy and means per strategy x budget, and per difficulty value; strategies in the order given."""
    order = {s: i for i, s in enumerate(strategies or [])}
    cells: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        cells[(r["strategy"], r["budget"])].append(r)
    keys = sorted(cells, key=lambda k: (order.get(k[0], len(order)), k[0], k[1]))
    by_budget = [{"strategy": s, "budget": b, **_cell(cells[(s, b)])} for s, b in keys]
    by_difficulty: dict[str, list[dict]] = {}
    for dk in DIFFICULTY_KEYS:
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in rows:
            if dk in r["difficulty"]:
                groups[(r["difficulty"][dk], r["strategy"], r["budget"])].append(r)
        if groups:
            values = sorted({g[0] for g in groups}, key=_value_order)
            by_difficulty[dk] = [
                {"value": v, "strategy": s, "budget": b, **_cell(groups[(v, s, b)])}
                for v in values
                for s, b in keys
                if (v, s, b) in groups
            ]
    return {
        "problems": len({r["id"] for r in rows}),
        "records": len(rows),
        "derived_records": sum(r["derived"] for r in rows),
        "interval": ACCURACY_INTERVAL,
        "by_budget": by_budget,
        "by_difficulty": by_difficulty,
    }


def write_summaries(out: Path, summary: dict[str, Any]) -> None:
    write_atomic(out / "summary.json", (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in summary["by_budget"]:
        w.writerow({"group": "all", "value": "", **row})
    for group, rows in summary["by_difficulty"].items():
        for row in rows:
            w.writerow({"group": group, **row})
    write_atomic(out / "summary.csv", buf.getvalue().encode("utf-8"))


def print_tables(console, summary: dict[str, Any], max_columns: int = 4) -> None:
    """Accuracy by strategy x budget, then one table per difficulty key (rows: its values)."""
    from rich.table import Table

    cells = {(r["strategy"], r["budget"]): r for r in summary["by_budget"]}
    strategies = list(dict.fromkeys(s for s, _ in cells))
    budgets = sorted({b for _, b in cells})
    t = Table(title=f"accuracy by strategy x budget, % ({INTERVAL_NOTE})", title_justify="left")
    t.add_column("strategy")
    for b in budgets:
        t.add_column(str(b), justify="right", overflow="fold")
    t.add_column("n", justify="right")
    for s in strategies:
        n = max(cells[(s, b)]["n"] for b in budgets if (s, b) in cells)
        t.add_row(s, *(_pct(cells.get((s, b))) for b in budgets), str(n))
    show(console, t)
    columns = list(cells)
    note = ""
    if len(columns) > max_columns:  # too wide: each strategy's largest budget only
        columns = [(s, max(b for s2, b in cells if s2 == s)) for s in strategies]
        note = " (largest budgets; all in summary.csv)"
    for key, rows in summary["by_difficulty"].items():
        by = {(r["value"], r["strategy"], r["budget"]): r for r in rows}
        values = list(dict.fromkeys(r["value"] for r in rows))
        t = Table(title=f"accuracy by {key}{note}, % ({INTERVAL_NOTE})", title_justify="left")
        t.add_column(key)
        for s, b in columns:
            t.add_column(f"{s}@{b}", justify="right", min_width=len(f"{s}@{b}"), overflow="fold")
        t.add_column("n", justify="right")
        for v in values:
            n = max((by[(v, s, b)]["n"] for s, b in columns if (v, s, b) in by), default=0)
            t.add_row(str(v), *(_pct(by.get((v, s, b))) for s, b in columns), str(n))
        show(console, t)


def show(console, table) -> None:
    """Print a table; off a terminal (a log, a pipe) at its natural width, so that no cell wraps or is cut. On
    a terminal Rich fits it to the window, folding an interval under its accuracy when it must."""
    if not console.is_terminal:
        from rich.console import Console
        from rich.measure import Measurement

        need = Measurement.get(console, console.options.update(max_width=WIDE), table).maximum
        if need > console.width:
            console = Console(file=console.file, width=need, no_color=True, highlight=False)
    console.print(table)


def _pct(cell: dict | None) -> str:
    """'72.3 (67.0-77.1)': the accuracy in percent and its 95% interval."""
    if cell is None:
        return "-"
    return f"{100 * cell['accuracy']:.1f} ({100 * cell['accuracy_low']:.1f}-{100 * cell['accuracy_high']:.1f})"
