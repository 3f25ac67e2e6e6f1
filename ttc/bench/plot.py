"""DIR/accuracy_vs_budget.png: accuracy against budget, a line per strategy, budget on a log2 axis.

matplotlib comes with the `plot` extra; `plot_available()` says whether it is importable so the command
line can print a one-line hint instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOT_FILE = "accuracy_vs_budget.png"
INSTALL_HINT = "--plot needs matplotlib: pip install 'ttc[plot]' (or pip install matplotlib)"


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_accuracy(out: Path, summary: dict[str, Any], title: str = "") -> Path:
    """Write the plot from a summary's `by_budget` rows; return its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[int, float]]] = {}
    for r in summary["by_budget"]:
        lines.setdefault(r["strategy"], []).append((r["budget"], r["accuracy"]))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    budgets = sorted({b for pts in lines.values() for b, _ in pts})
    for strategy, pts in lines.items():
        pts.sort()
        ax.plot([b for b, _ in pts], [100 * a for _, a in pts], marker="o", label=strategy)
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("budget (generation-equivalents, log2)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = out / PLOT_FILE
    tmp = path.with_name("accuracy_vs_budget.tmp.png")
    try:
        fig.savefig(tmp)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
