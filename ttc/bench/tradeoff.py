"""`ttc bench DATA --presets SMALL,LARGE`: the paper's question, "the small model with budget N, or the big
one?", answered at matched inference FLOPs.

Each preset runs as an ordinary bench in DIR/<preset>/ (resumable, with its own summary), on the same
problems, strategies and seed; `--preset-budgets NAME=1,2,4` gives one preset other budgets (the larger model
at fewer). Then DIR/tradeoff.json and DIR/tradeoff.csv hold the *FLOPs-matched* table: for each difficulty
group (all problems, then MATH `level` or arith `ops` in bins 1-2 / 3-5 / 6-8) and each FLOPs level (a
doubling grid from the cheapest cell), the best accuracy each model reaches with cells whose mean inference
FLOPs per problem (in that group) are within the level, with its 95% Wilson interval, and which model wins:
the one whose lead over the other's best cell is outside the paired 95% interval (Newcombe, method 10, on
the same problems), else "tie". FLOPs are each record's `spent.flops`: 2 x parameters x tokens, policy and
PRM, prompt tokens included.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .stats import ACCURACY_INTERVAL, pair, wilson
from .store import read_run, write_atomic

TRADEOFF_FILE, TRADEOFF_CSV, TRADEOFF_PLOT = "tradeoff.json", "tradeoff.csv", "accuracy_vs_flops.png"
OPS_BINS = ((1, 2), (3, 5), (6, 8))  # arith's operator counts, in the paper's easy / medium / hard spirit
CSV_COLUMNS = (
    "group", "flops_max", "model", "strategy", "budget", "n", "accuracy", "accuracy_low", "accuracy_high",
    "mean_flops", "winner", "difference", "difference_low", "difference_high",
)  # fmt: skip


def parse_presets(text: str | None) -> dict[str, str]:
    """'a,b' -> {name: preset as given}: two or more presets (names or YAML paths) that each load and whose
    answers are graded alike; the name (the preset's own) is its folder in the run and its column."""
    from ..presets import load_preset

    given = list(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))
    if len(given) < 2:
        raise UsageError(
            f"--presets compares two or more models, got {text!r}: name them separated by commas, "
            "e.g. --presets qwen2.5-math-1.5b,my-7b.yaml"
        )
    loaded = {g: load_preset(g) for g in given}
    names = [p.name for p in loaded.values()]
    if len(set(names)) < len(names):
        raise UsageError(f"--presets: two of {', '.join(given)} are the same preset ({', '.join(names)})")
    formats = {p.name: p.answer.format for p in loaded.values()}
    if len(set(formats.values())) > 1:
        shown = ", ".join(f"{n}: {f}" for n, f in formats.items())
        raise UsageError(f"--presets: the models write their answers in different formats ({shown}); "
                         "their accuracies on one dataset cannot be compared")  # fmt: skip
    return {p.name: g for g, p in loaded.items()}


def parse_preset_budgets(specs: list[str] | None, presets) -> dict[str, list[int]]:
    """['tiny-arith-large=1,2,4'] -> {'tiny-arith-large': [1, 2, 4]}; the name must be one of --presets."""
    from .run import parse_budgets

    out: dict[str, list[int]] = {}
    for spec in specs or []:
        name, sep, budgets = spec.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--preset-budgets takes NAME=BUDGETS (e.g. my-7b=1,2,4), got {spec!r}")
        if name.strip() not in presets:
            raise UsageError(
                f"--preset-budgets names {name.strip()!r}, which is not in --presets ({', '.join(presets)})"
            )
        out[name.strip()] = parse_budgets(budgets)
    return out


def run_tradeoff(opts, presets: dict[str, str], budgets_for: dict[str, list[int]], console=None) -> dict[str, Any]:
    """Run the bench once per preset (name -> preset as given) in opts.out/<name>, then write and show the
    FLOPs-matched table."""
    from .run import run_bench

    if opts.models.model:
        raise UsageError("--model does not go with --presets: each preset names its own model")
    if opts.paired:
        raise UsageError("--paired compares cells of one run; with --presets, run `ttc bench DIR/PRESET --paired ...`")
    out = Path(opts.out)
    for name, given in presets.items():
        sub = dataclasses.replace(
            opts,
            out=str(out / name),
            budgets=budgets_for.get(name, opts.budgets),
            models=dataclasses.replace(opts.models, preset=given),
            plot=False,
        )
        if console is not None and not opts.quiet:
            console.print(f"bench: preset {name} -> {sub.out}", markup=False, highlight=False)
        run_bench(sub, console=console)
    return report_tradeoff(out, list(presets), opts.plot, opts.quiet, console)


def is_tradeoff_folder(path: str | Path) -> bool:
    return (Path(path) / TRADEOFF_FILE).is_file()


def report_tradeoff(out: Path, presets: list[str] | None, plot: bool, quiet: bool, console) -> dict[str, Any]:
    """The FLOPs-matched table from the preset folders under `out` (nothing is run)."""
    out = Path(out)
    if presets is None:
        presets = json.loads((out / TRADEOFF_FILE).read_text(encoding="utf-8"))["presets"]
    rows = {}
    for name in presets:
        store = read_run(out / name)
        try:
            rows[name] = list(store.rows)
        finally:
            store.close()
    table = flops_matched(rows)
    result = {"presets": presets, "interval": ACCURACY_INTERVAL, "flops_matched": table}
    write_atomic(out / TRADEOFF_FILE, (json.dumps(result, indent=2) + "\n").encode("utf-8"))
    write_atomic(out / TRADEOFF_CSV, _csv(table).encode("utf-8"))
    say = (lambda msg, **kw: None) if (quiet or console is None) else console.print
    if console is not None and not quiet:
        print_tradeoff(console, result)
    if plot:
        from .plot import INSTALL_HINT, plot_available

        if not plot_available():
            say(f"ttc: {INSTALL_HINT}", markup=False, highlight=False)
        else:
            say(f"ttc: wrote {plot_tradeoff(out, result, rows)}", markup=False, highlight=False)
    say(f"bench: FLOPs-matched table in {out / TRADEOFF_FILE}", markup=False, highlight=False)
    return result


def _groups(rows: list[dict]) -> dict[str, set[str]]:
    """Problem ids per difficulty group: 'all', then level=N (MATH) or ops=A-B (arith's bins)."""
    groups: dict[str, set[str]] = {"all": set()}
    for r in rows:
        groups["all"].add(r["id"])
        d = r.get("difficulty") or {}
        if "level" in d:
            groups.setdefault(f"level={d['level']}", set()).add(r["id"])
        elif isinstance(d.get("ops"), int):
            lo, hi = next(((a, b) for a, b in OPS_BINS if a <= d["ops"] <= b), (d["ops"], d["ops"]))
            groups.setdefault(f"ops={lo}-{hi}", set()).add(r["id"])
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0])))


def _cells(rows: list[dict], ids: set[str]) -> list[dict]:
    """Per (strategy, budget) over the problems `ids`: accuracy, interval, mean FLOPs, the verdicts by id."""
    by: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        if r["id"] in ids:
            by[(r["strategy"], r["budget"])].append(r)
    out = []
    for (s, b), rs in by.items():
        k, n = sum(r["correct"] for r in rs), len(rs)
        low, high = wilson(k, n)
        out.append({
            "strategy": s, "budget": b, "n": n, "accuracy": k / n, "accuracy_low": low, "accuracy_high": high,
            "mean_flops": sum(r["flops"] for r in rs) / n, "verdicts": {r["id"]: bool(r["correct"]) for r in rs},
        })  # fmt: skip
    return out


def _best(cells: list[dict], limit: float) -> dict | None:
    """The most accurate cell within `limit` FLOPs (ties: the cheaper)."""
    fits = [c for c in cells if c["mean_flops"] <= limit * (1 + 1e-9)]
    return max(fits, key=lambda c: (c["accuracy"], -c["mean_flops"], -c["budget"])) if fits else None


def flops_matched(runs: dict[str, list[dict]]) -> list[dict]:
    """The FLOPs-matched rows: per group and FLOPs level, each model's best cell within it and the winner."""
    names = list(runs)
    groups = _groups([r for rows in runs.values() for r in rows])
    table = []
    for group, ids in groups.items():
        cells = {m: _cells(runs[m], ids) for m in names}
        every = [c["mean_flops"] for cs in cells.values() for c in cs if c["mean_flops"] > 0]
        if not every:
            continue
        lo, hi = min(every), max(every)
        levels = [lo * 2**k for k in range(int(math.ceil(math.log2(hi / lo) - 1e-9)) + 1)]
        if levels[-1] < hi * (1 - 1e-9):
            levels.append(hi)
        for limit in levels:
            best = {m: _best(cells[m], limit) for m in names}
            row = {"group": group, "flops_max": limit, "models": {}}
            for m, c in best.items():
                row["models"][m] = None if c is None else {k: v for k, v in c.items() if k != "verdicts"}
            row.update(_winner(best))
            table.append(row)
    return table


def _winner(best: dict[str, dict | None]) -> dict:
    """The model ahead of every other's best cell by more than the paired interval, else 'tie'; with two
    models the paired difference (first minus second) and its interval are kept."""
    fit = {m: c for m, c in best.items() if c is not None}
    if len(fit) == 1:
        return {"winner": next(iter(fit)), "why": "only one fits"}
    if not fit:
        return {"winner": None, "why": "none fits"}
    top = max(fit, key=lambda m: fit[m]["accuracy"])
    diffs = {}
    ahead = True
    for m, c in fit.items():
        if m == top:
            continue
        p = pair(fit[top]["verdicts"], c["verdicts"])
        lo, hi = p.interval()
        diffs[m] = (p.difference, lo, hi, p.p_value)
        ahead = ahead and lo > 0
    out: dict[str, Any] = {
        "winner": top if ahead else "tie",
        "why": "paired 95% interval" + ("" if ahead else " includes 0"),
    }
    if len(best) == 2:
        first, second = list(best)
        d, lo, hi, p = diffs[second] if top == first else diffs[first]
        sign = 1 if top == first else -1
        lo, hi = (lo, hi) if sign == 1 else (-hi, -lo)
        out.update(difference=round(sign * d, 6), difference_low=round(lo, 6), difference_high=round(hi, 6), p_value=p)
    return out


def _csv(table: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in table:
        for m, c in row["models"].items():
            base = {
                k: row.get(k)
                for k in ("group", "flops_max", "winner", "difference", "difference_low", "difference_high")
            }
            w.writerow({**base, "model": m, **(c or {})})
    return buf.getvalue()


def _flops(x: float) -> str:
    return f"{x:.2e}"


def print_tradeoff(console, result: dict) -> None:
    """One Rich table per difficulty group: FLOPs level, each model's best cell and accuracy, the winner."""
    from rich.table import Table

    from .summary import show

    names = result["presets"]
    by_group: dict[str, list[dict]] = defaultdict(list)
    for row in result["flops_matched"]:
        by_group[row["group"]].append(row)
    for group, rows in by_group.items():
        t = Table(title=f"FLOPs-matched, {group}: best accuracy within the FLOPs, % (95% Wilson interval)",
                  title_justify="left")  # fmt: skip
        t.add_column("FLOPs <=", justify="right")
        for m in names:
            t.add_column(m, justify="right")
        t.add_column("winner")
        for row in rows:
            cells = []
            for m in names:
                c = row["models"].get(m)
                cells.append("-" if c is None else (
                    f"{100 * c['accuracy']:.1f} ({100 * c['accuracy_low']:.1f}-{100 * c['accuracy_high']:.1f}) "
                    f"{c['strategy']}@{c['budget']}"
                ))  # fmt: skip
            win = row["winner"] or "-"
            if row.get("why") == "only one fits":
                win += " (only it fits)"
            if "difference" in row:
                d, lo, hi = (100 * row[k] for k in ("difference", "difference_low", "difference_high"))
                win += f" ({d:+.1f}, {lo:+.1f} to {hi:+.1f})"
            t.add_row(_flops(row["flops_max"]), *cells, win)
        show(console, t)


def plot_tradeoff(out: Path, result: dict, runs: dict[str, list[dict]]) -> Path:
    """DIR/accuracy_vs_flops.png: one panel per difficulty group, one line per model (its best accuracy
    within each FLOPs level, with the Wilson interval), and each model's cells as faint points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_group: dict[str, list[dict]] = defaultdict(list)
    for row in result["flops_matched"]:
        by_group[row["group"]].append(row)
    groups = list(by_group)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 4.2), dpi=110, squeeze=False)
    all_groups = _groups([r for rows in runs.values() for r in rows])
    for ax, group in zip(axes[0], groups):
        for i, m in enumerate(result["presets"]):
            pts = [(row["flops_max"], row["models"][m]) for row in by_group[group] if row["models"].get(m)]
            if not pts:
                continue
            xs = [x for x, _ in pts]
            ys = [100 * c["accuracy"] for _, c in pts]
            below = [100 * (c["accuracy"] - c["accuracy_low"]) for _, c in pts]
            above = [100 * (c["accuracy_high"] - c["accuracy"]) for _, c in pts]
            color = f"C{i}"
            ax.errorbar(
                xs, ys, yerr=[below, above], marker="o", capsize=3, label=m, color=color, drawstyle="steps-post"
            )
            cells = _cells(runs[m], all_groups[group])
            ax.scatter(
                [c["mean_flops"] for c in cells], [100 * c["accuracy"] for c in cells], color=color, alpha=0.25, s=12
            )
        ax.set_xscale("log")
        ax.set_title(group)
        ax.set_xlabel("inference FLOPs per problem (policy + PRM)")
        ax.set_ylabel("best accuracy within the FLOPs (%, 95% Wilson)")
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("accuracy against inference FLOPs, best strategy per model")
    fig.tight_layout()
    path = out / TRADEOFF_PLOT
    fig.savefig(path, metadata={"Description": "accuracy vs FLOPs per model, one panel per difficulty group"})
    plt.close(fig)
    return path
