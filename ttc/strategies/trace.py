"""Scores of a whole trace from the token statistics sampling already computed (no PRM, no extra decode):
small pure functions, tested alone.

From DeepConf (Fu et al. 2025), on the token confidences C_i (engine.base.TokenStats.confidence):
  group confidences  the means of C over every window of `window` consecutive tokens (a trace shorter than the
                     window has one group: the mean of all its tokens), as DeepConf's reference code has it
  lowest-group       the smallest group confidence
  bottom-10          the mean of the lowest 10% of the group confidences (at least one)
  tail               the mean of C over the last `window` tokens
  mean               the mean of C over the trace
and from Kang et al. 2025, on the per-token KL(uniform || p):
  self-certainty     its mean over the trace
Higher is more confident for every one of them.

The window: DeepConf used 2048 tokens for traces of tens of thousands. The built-in policy writes 20-60-token
solutions, so by default a trace's window is a fraction of its own length, at most 2048 tokens:
window_for(n) = min(2048, max(1, ceil(WINDOW_FRACTION * n))): half the trace, at most 2048 tokens. On 1,200
calibration problems of the built-in policy (none of the shipped 500; 16 traces each, ~56 tokens), lowest-group
told a problem's right traces from its wrong ones best with half-length windows (AUROC 0.619 within problems;
a quarter: 0.590, fixed 16 / 32 tokens: 0.614 / 0.619); see tests/bench_confidence.py and the README.
"""

from __future__ import annotations

import math

import numpy as np

from ..engine.base import TokenStats

SCORES = ("lowest-group", "bottom-10", "tail", "mean", "self-certainty")
DEFAULT_SCORE = "lowest-group"  # what weight=confidence and deepconf score traces by unless told
CONFIDENCE_TOP_K = 20  # DeepConf's k: a token's confidence is over the 20 most likely tokens
MAX_WINDOW = 2048  # DeepConf's window, the most a default window takes
WINDOW_FRACTION = 0.5  # a default window is this fraction of the trace's length
BOTTOM_FRACTION = 0.10  # bottom-10: the lowest tenth of the group confidences


def window_for(n_tokens: int, window: int | None = None) -> int:
    """The window of a trace of n_tokens: `window` when given, else the default fraction of its length."""
    if window is not None:
        return int(window)
    return max(1, min(MAX_WINDOW, math.ceil(WINDOW_FRACTION * n_tokens)))


def group_confidences(confidence: np.ndarray, window: int) -> np.ndarray:
    """Means of C over every full window of `window` tokens (one group, the mean of all, when shorter)."""
    c = np.asarray(confidence, dtype=np.float64)
    if len(c) == 0:
        return np.zeros(1)
    w = max(1, min(int(window), len(c)))
    run = np.concatenate([[0.0], np.cumsum(c)])
    return (run[w:] - run[:-w]) / w


def lowest_group(confidence: np.ndarray, window: int) -> float:
    return float(group_confidences(confidence, window).min())


def trace_scores(stats: TokenStats, window: int | None = None) -> dict[str, float]:
    """Every score of SCORES for one trace, and the window its group scores used ("window")."""
    c = np.asarray(stats.confidence, dtype=np.float64)
    w = window_for(len(c), window)
    groups = np.sort(group_confidences(c, w))
    cert = np.asarray(stats.certainty, dtype=np.float64)
    out = {
        "lowest-group": float(groups[0]),
        "bottom-10": float(groups[: max(1, math.ceil(BOTTOM_FRACTION * len(groups)))].mean()),
        "tail": float(c[-w:].mean()) if len(c) else 0.0,
        "mean": float(c.mean()) if len(c) else 0.0,
        "self-certainty": float(cert.mean()) if len(cert) and not np.isnan(cert).all() else float("nan"),
    }
    out = {k: round(v, 6) for k, v in out.items()}
    out["window"] = w
    return out


def token_lists(stats: TokenStats, digits: int = 4) -> dict[str, list[float]]:
    """The per-token values as plain lists (for a record that asked to keep them)."""
    return {
        name: [round(float(x), digits) for x in getattr(stats, name)] for name in ("confidence", "logprob", "certainty")
    }


def auroc(scores, labels) -> float:
    """The area under the ROC curve of `scores` for telling `labels` True from False (ties count a half):
    the probability that a random right trace outscores a random wrong one. NaN when one class is empty."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))
