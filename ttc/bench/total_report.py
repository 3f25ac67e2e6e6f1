"""The comparison a `--total-budget` run ends with: at each total, the four ways side by side (accuracy with its
Wilson interval, what each really spent, in sum and per problem, and its paired difference against uniform
allocation at the same total), then where each way first matches each uniform cell: the smallest total of
the run at which its accuracy is at least uniform's, as a fraction of what uniform spent, with the paired
interval there. `--plot` draws DIR/accuracy_vs_total.png: accuracy against total spend for each way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..policy.allocate import MODES
from .stats import PAIRED_INTERVAL, pair, wilson

PLOT_FILE = "accuracy_vs_total.png"


def _cells(rows: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
    out: dict[tuple[str, int], dict[str, dict]] = {}
    for r in rows:
        if r["strategy"] in MODES:
            out.setdefault((r["strategy"], r["budget"]), {})[r["id"]] = r
    return out


def _paired(a: dict[str, dict], b: dict[str, dict]) -> dict:
    p = pair({k: r["correct"] for k, r in a.items()}, {k: r["correct"] for k, r in b.items()})
    low, high = p.interval()
    return {"n": p.n, "difference": round(p.difference, 6), "difference_low": round(low, 6),
            "difference_high": round(high, 6), "only_first_right": p.b, "only_second_right": p.c,
            "mcnemar_p": round(p.p_value, 6)}  # fmt: skip


def allocation_summary(store, totals: list[int], unit: str) -> dict[str, Any]:
    """summary.json's `allocation` section, from the run's records."""
    cells = _cells(store.rows)
    rows = []
    for total in totals:
        uniform = cells.get(("uniform", total), {})
        for mode in MODES:
            got = cells.get((mode, total))
            if not got:
                continue
            n, k = len(got), sum(r["correct"] for r in got.values())
            low, high = wilson(k, n)
            gens = sum(r["generations"] for r in got.values())
            toks = sum(r["tokens"] for r in got.values())
            row = {"mode": mode, "total": total, "n": n, "correct": k, "accuracy": round(k / n, 6),
                   "accuracy_low": round(low, 6), "accuracy_high": round(high, 6),
                   "spent_generations": round(gens, 3), "spent_tokens": toks,
                   "mean_generations": round(gens / n, 3), "mean_tokens": round(toks / n, 3),
                   "max_generations": max(r["generations"] for r in got.values())}  # fmt: skip
            if mode != "uniform" and uniform:
                row["vs_uniform"] = _paired(got, uniform)
            rows.append(row)
    return {"unit": unit, "rows": rows, "matches": _matches(rows, cells), "interval": PAIRED_INTERVAL}


def _matches(rows: list[dict], cells) -> list[dict]:
    """For each uniform cell and each other way: the smallest total of the run where that way is at least
    as accurate, its spend as a fraction of uniform's, and the paired difference there."""
    by = {(r["mode"], r["total"]): r for r in rows}
    out = []
    for u in (r for r in rows if r["mode"] == "uniform"):
        for mode in MODES[1:]:
            mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["spent_generations"])
            hit = next((r for r in mine if r["accuracy"] >= u["accuracy"]), None)
            entry = {"uniform_total": u["total"], "uniform_accuracy": u["accuracy"], "mode": mode}
            if hit is None:
                entry["matched"] = False
            else:
                key = "spent_generations" if by[("uniform", u["total"])]["spent_generations"] else "spent_tokens"
                entry.update({
                    "matched": True, "at_total": hit["total"], "accuracy": hit["accuracy"],
                    "fraction_of_uniform_generations": round(hit["spent_generations"] / u["spent_generations"], 4),
                    "fraction_of_uniform_tokens": round(hit["spent_tokens"] / max(1, u["spent_tokens"]), 4),
                    "paired": _paired(cells[(mode, hit["total"])], cells[("uniform", u["total"])]),
                    "by": key,
                })  # fmt: skip
            out.append(entry)
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def print_allocation(console, alloc: dict) -> None:
    from rich.table import Table

    from .summary import show

    t = Table(title=f"one total for the file, {alloc['unit']}: accuracy % (95% Wilson) and paired vs uniform "
              "(Newcombe 95%, McNemar)", title_justify="left")  # fmt: skip
    for col in ("total", "way", "accuracy", "spent", "per problem", "max", "vs uniform", "b / c", "p"):
        t.add_column(col, justify="left" if col == "way" else "right")
    for r in alloc["rows"]:
        v = r.get("vs_uniform")
        spent = r["spent_generations"] if alloc["unit"] == "generations" else r["spent_tokens"]
        per = r["mean_generations"] if alloc["unit"] == "generations" else r["mean_tokens"]
        t.add_row(
            str(r["total"]), r["mode"],
            f"{_pct(r['accuracy'])} ({_pct(r['accuracy_low'])}-{_pct(r['accuracy_high'])})", f"{spent:g}",
            f"{per:g}", f"{r['max_generations']:g}",
            "" if v is None else f"{100 * v['difference']:+.1f} ({100 * v['difference_low']:+.1f} to "
            f"{100 * v['difference_high']:+.1f})",
            "" if v is None else f"{v['only_first_right']} / {v['only_second_right']}",
            "" if v is None else f"{v['mcnemar_p']:.3g}",
        )  # fmt: skip
    show(console, t)
    for m in alloc["matches"]:
        head = f"{m['mode']} vs uniform at {m['uniform_total']} ({_pct(m['uniform_accuracy'])}%)"
        if not m["matched"]:
            console.print(f"{head}: not matched at any total of this run", markup=False, highlight=False)
            continue
        p = m["paired"]
        console.print(
            f"{head}: matched at total {m['at_total']} ({_pct(m['accuracy'])}%), "
            f"{m['fraction_of_uniform_generations']:.3f}x uniform's generations, "
            f"{m['fraction_of_uniform_tokens']:.3f}x its tokens; paired {100 * p['difference']:+.1f} points "
            f"(95% {100 * p['difference_low']:+.1f} to {100 * p['difference_high']:+.1f}; b={p['only_first_right']}, "
            f"c={p['only_second_right']}, p={p['mcnemar_p']:.3g})",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip


def plot_totals(out: Path, alloc: dict, title: str, say) -> Path | None:
    """Accuracy against total spend (generations and tokens generated, in sum) for each way."""
    from .plot import INSTALL_HINT, _axis, _errorbar, plot_available

    if not plot_available():
        say(f"ttc: {INSTALL_HINT}", markup=False, highlight=False, soft_wrap=True)
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_g, ax_t) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    for mode in MODES:
        rows = sorted((r for r in alloc["rows"] if r["mode"] == mode), key=lambda r: r["total"])
        if rows:
            _errorbar(ax_g, [r["spent_generations"] for r in rows], rows, mode)
            _errorbar(ax_t, [r["spent_tokens"] for r in rows], rows, mode)
    from matplotlib.ticker import ScalarFormatter

    for ax, what in ((ax_g, "generations"), (ax_t, "policy tokens")):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        _axis(ax, f"accuracy vs total {what} spent", f"total {what} spent on the file (log2)")
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = out / PLOT_FILE
    try:
        fig.savefig(
            path,
            metadata={
                "Title": title or "ttc bench --total-budget",
                "Description": "accuracy vs total spend per way of splitting the total",
            },
        )
    finally:
        plt.close(fig)
    say(f"ttc: wrote {path}", markup=False, highlight=False, soft_wrap=True)
    return path
