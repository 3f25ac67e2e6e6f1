"""The end of a bench: summaries written, tables and paired comparisons shown, the plot drawn; and
`ttc bench DIR`, which does the same from a run folder's samples.jsonl without running anything.

`publish` serves both: a run that has just finished (`run.run_bench`) and a folder read back (`report_run`),
so `ttc bench DIR --paired A@N,B@M --plot` on a finished run gives what the run itself would have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import TTCRuntimeError
from .paired import Cell, check_cells, compare_cells, describe
from .plot import plot_available
from .store import CONFIG, SAMPLES, read_run
from .summary import print_tables, summarize, write_summaries
from .thinkgrid import grid, plot_grid, print_grid


def is_run_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / SAMPLES).is_file() and (p / CONFIG).is_file()


def publish(
    out: Path, summary: dict, rows: list[dict], pairs: list[tuple[Cell, Cell]], plot: bool, title: str, console, say
) -> dict:
    """Add the paired comparisons to `summary`, write summary.json/csv, show the tables (console None: not)
    and the comparisons, draw the plot; return the summary."""
    summary["paired"] = compare_cells(rows, pairs)
    write_summaries(out, summary)
    think_cells = grid(summary)
    if console is not None:
        print_tables(console, summary)
        if think_cells:
            print_grid(console, think_cells)
    for entry in summary["paired"]:
        say(describe(entry), markup=False, highlight=False, soft_wrap=True)
    if plot:
        _plot(out, summary, title, say)
        if think_cells and plot_available():
            say(f"ttc: wrote {plot_grid(out, think_cells, title)}", markup=False, highlight=False, soft_wrap=True)
    return summary


def report_run(d: str | Path, pairs: list[tuple[Cell, Cell]], plot: bool, quiet: bool, console) -> dict[str, Any]:
    """Summarize a run folder as it stands (finished or not): nothing is run, no model is loaded."""
    d = Path(d)
    say = (lambda msg, **kw: None) if (quiet or console is None) else console.print
    store = read_run(d)
    try:
        for note in store.notes:
            say(f"ttc: {note}", markup=False, highlight=False, soft_wrap=True)
        strategies = [str(s) for s in store.config.get("strategies") or []]
        fresh = summarize(store.rows, strategies)
        check_cells(pairs, [(r["strategy"], r["budget"]) for r in fresh["by_budget"]], f"the run in {d}")
        old = _read_summary(d / "summary.json")
        summary = {**old, **fresh}
        summary.pop("interrupted", None)  # recomputed from every record there is now
        dataset = store.config.get("dataset") or {}
        title = Path(str(dataset.get("path", ""))).name if isinstance(dataset, dict) else ""
        total = store.config.get("total")
        if isinstance(total, dict):  # a --total-budget run: its comparison of the ways (bench/total_report.py)
            from .total_report import allocation_summary, plot_totals, print_allocation

            summary["allocation"] = allocation_summary(store, sorted({r["budget"] for r in store.rows}), total["unit"])
            publish(d, summary, store.rows, pairs, False, title, None, say)
            if not quiet and console is not None:
                print_allocation(console, summary["allocation"])
            if plot:
                plot_totals(d, summary["allocation"], title, say)
        else:
            publish(d, summary, store.rows, pairs, plot, title, None if quiet else console, say)
    finally:
        store.close()
    say(f"bench: {summary['records']} records summarized from {store.samples_path}; nothing was run", markup=False)
    return summary


def _read_summary(path: Path) -> dict:
    """The summary a run wrote (its dataset, model and overhead are kept), or {} when there is none."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def _plot(out: Path, summary: dict, title: str, say) -> None:
    from .plot import INSTALL_HINT, plot_accuracy

    if not plot_available():
        say(f"ttc: {INSTALL_HINT}", markup=False, highlight=False, soft_wrap=True)
        return
    try:
        path = plot_accuracy(out, summary, title=title)
    except OSError as e:
        raise TTCRuntimeError(f"{out}: cannot write the plot ({e.strerror or e})") from None
    say(f"ttc: wrote {path}", markup=False, highlight=False, soft_wrap=True)
