"""How well does the predicted difficulty track the real one? `ttc difficulty --data FILE.jsonl`.

For each labeled problem: the predicted level (`Solver.difficulty`: the mean final PRM score of a few
scored samples, binned by the policy's thresholds) and the true pass rate, the share of `pass_samples`
further samples (another seed) whose answer is right. The summary gives Spearman's rank correlation between
the level and the failure rate (1 - pass rate; positive when higher levels are harder), and the same for
the raw mean score and the answer agreement, so a user sees whether the estimate is worth its samples.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..answers import extract_gold
from ..bench.datasets import read_dataset
from ..bench.progress import Tally, make_reporter
from ..errors import UsageError

PASS_SEED_OFFSET = 7_919  # the pass-rate samples are independent of the estimation samples


def ranks(values: list[float]) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (as Spearman's rho needs)."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    r = np.empty(len(v), dtype=float)
    sorted_v = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation; None when either side is constant or has fewer than 3 values."""
    if len(x) != len(y):
        raise ValueError("spearman needs two lists of the same length")
    if len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def check_dataset(
    solver,
    data: str,
    samples: int,
    pass_samples: int,
    seed: int = 0,
    limit: int | None = None,
    console=None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Predicted level and true pass rate per problem of a labeled dataset, and how well they agree."""
    from ..bench.run import grade_answers

    if pass_samples < 1:
        raise UsageError(f"--pass-samples must be a positive integer, got {pass_samples}")
    ds = read_dataset(data)
    problems = ds.problems[:limit] if limit is not None else ds.problems
    if not problems:
        raise UsageError(f"{data}: no valid problems to estimate")
    pair = ("majority", pass_samples)
    tally = Tally([pair], len(problems), {})
    rows = []
    with make_reporter(tally, console, quiet) as reporter:
        for p in problems:
            t0 = time.monotonic()
            est = solver.difficulty(p.text, samples, None, seed, warn=not rows)
            result = solver.solve(p.text, "majority", pass_samples, seed=seed + PASS_SEED_OFFSET)
            verdicts = grade_answers([result.answer, *(c.answer for c in result.candidates)], extract_gold(p.gold))
            passed = sum(verdicts[c.answer] for c in result.candidates)
            row = {
                "id": p.id,
                "problem": p.text,
                "level": est["level"],
                "mean_score": est["mean_score"],
                "agreement": est["agreement"],
                "pass_rate": round(passed / max(1, len(result.candidates)), 4),
                "majority_correct": verdicts[result.answer],
                **{k: v for k, v in p.difficulty.items()},
            }
            rows.append(row)
            reporter.record(pair, row["majority_correct"], result.spent.tokens_generated, time.monotonic() - t0)
    fail = [1 - r["pass_rate"] for r in rows]
    rho = {
        "level": spearman([r["level"] for r in rows], fail),
        "mean_score": _neg(spearman([r["mean_score"] for r in rows], fail)),
        "agreement": _neg(spearman([r["agreement"] for r in rows], fail)),
    }
    by_level = {}
    for level in sorted({r["level"] for r in rows}):
        at = [r for r in rows if r["level"] == level]
        by_level[level] = {"problems": len(at), "mean_pass_rate": round(sum(r["pass_rate"] for r in at) / len(at), 4)}
    return {
        "data": str(data),
        "problems": len(rows),
        "samples": samples,
        "pass_samples": pass_samples,
        "seed": seed,
        "policy": solver.policy_table.source if solver.policy_table else None,
        "spearman": {k: (None if v is None else round(v, 4)) for k, v in rho.items()},
        "by_level": by_level,
        "rows": rows,
    }


def _neg(v: float | None) -> float | None:
    """A high score or agreement means easy: flip the sign so every rho is positive when it tracks difficulty."""
    return None if v is None else -v  # spearman gives None, never NaN, for a constant side
