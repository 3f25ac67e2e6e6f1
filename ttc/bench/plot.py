"""DIR/accuracy_vs_budget.png: a bench's accuracy in up to three panels, each point with its 95% Wilson interval
as an error bar.

    accuracy vs budget            a line per strategy, budget on a log2 axis
    accuracy vs tokens generated  the same points at the mean tokens each cell really generated per problem
                                  (`spent.tokens_generated`), so strategies are compared on what they spent
    accuracy by level / ops       when the data has a difficulty (MATH `level`, arith `ops`): a line per
                                  cell, or per strategy at its largest budget when there are many cells

The PNG's Description names the panels. matplotlib comes with the `plot` extra; `plot_available()` says
whether it is importable so the command line can print a one-line hint instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOT_FILE = "accuracy_vs_budget.png"
INSTALL_HINT = "--plot needs matplotlib: pip install 'ttc[plot]' (or pip install matplotlib)"
DIFFICULTY_PANEL_KEYS = ("level", "ops")  # the first one the summary has gets a panel
MAX_DIFFICULTY_LINES = 4  # more cells than this: each strategy's largest budget only


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _errorbar(ax, xs, rows, label):
    """Accuracy in percent at xs, with the Wilson interval of each row as an asymmetric error bar."""
    ys = [100 * r["accuracy"] for r in rows]
    below = [100 * (r["accuracy"] - r.get("accuracy_low", r["accuracy"])) for r in rows]
    above = [100 * (r.get("accuracy_high", r["accuracy"]) - r["accuracy"]) for r in rows]
    ax.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=3, label=label)


def _axis(ax, title: str, xlabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%, 95% Wilson interval)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)


def figure(summary: dict[str, Any], title: str = ""):
    """The figure for a summary (its `by_budget` and `by_difficulty` rows); the caller closes it."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    lines: dict[str, list[dict]] = {}
    for r in summary["by_budget"]:
        lines.setdefault(r["strategy"], []).append(r)
    key = next((k for k in DIFFICULTY_PANEL_KEYS if summary.get("by_difficulty", {}).get(k)), None)
    fig, axes = plt.subplots(1, 3 if key else 2, figsize=(16 if key else 11, 4.5), dpi=110, squeeze=False)
    ax_b, ax_t = axes[0][0], axes[0][1]

    budgets = sorted({r["budget"] for r in summary["by_budget"]})
    for strategy, rows in lines.items():
        rows = sorted(rows, key=lambda r: r["budget"])
        _errorbar(ax_b, [r["budget"] for r in rows], rows, strategy)
        _errorbar(ax_t, [max(r.get("mean_tokens", 0), 1e-9) for r in rows], rows, strategy)
    ax_b.set_xscale("log", base=2)
    if budgets:
        ax_b.set_xticks(budgets, [str(b) for b in budgets])
    _axis(ax_b, "accuracy vs budget", "budget (generation-equivalents, log2)")
    tokens = [r.get("mean_tokens", 0) for r in summary["by_budget"]]
    if tokens and min(tokens) > 0:
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax_t.set_xscale("log")
        ax_t.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 3, 5)))  # 100, 200, 300, 500, 1000
        ax_t.xaxis.set_major_formatter(ScalarFormatter())  # plain numbers, not 10^2; none on minor ticks
        ax_t.xaxis.set_minor_formatter(NullFormatter())
    _axis(ax_t, "accuracy vs tokens generated", "mean tokens generated per problem")
    ax_b.legend(fontsize="small")

    if key:
        _difficulty_panel(axes[0][2], key, summary["by_difficulty"][key])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _difficulty_panel(ax, key: str, rows: list[dict]) -> None:
    values = list(dict.fromkeys(r["value"] for r in rows))  # summary order: sorted, numbers first
    cells = list(dict.fromkeys((r["strategy"], r["budget"]) for r in rows))
    note = ""
    if len(cells) > MAX_DIFFICULTY_LINES:
        top = {s: max(b for s2, b in cells if s2 == s) for s, _ in cells}
        cells = [(s, b) for s, b in cells if top[s] == b]
        note = " (largest budgets)"
    by = {(r["value"], r["strategy"], r["budget"]): r for r in rows}
    width = 0.6 / max(1, len(cells))  # side by side around each value, so the error bars stay apart
    for i, (s, b) in enumerate(cells):
        pts = [(j, by[(v, s, b)]) for j, v in enumerate(values) if (v, s, b) in by]
        offset = (i - (len(cells) - 1) / 2) * width
        _errorbar(ax, [j + offset for j, _ in pts], [r for _, r in pts], f"{s}@{b}")
    ax.set_xticks(range(len(values)), [str(v) for v in values])
    _axis(ax, f"accuracy by {key}{note}", key)
    ax.legend(fontsize="small")


def plot_accuracy(out: Path, summary: dict[str, Any], title: str = "") -> Path:
    """Write the plot from a summary; return its path."""
    fig = figure(summary, title)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    panels = "; ".join(ax.get_title() for ax in fig.axes)
    path = out / PLOT_FILE
    tmp = path.with_name("accuracy_vs_budget.tmp.png")
    try:
        fig.savefig(tmp, metadata={"Title": title or "ttc bench", "Description": f"panels: {panels}"})
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
