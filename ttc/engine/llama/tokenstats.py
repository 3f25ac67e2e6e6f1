"""Token statistics from the logits rows a decode already produced: DeepConf's token confidence, the sampled
token's log-probability and self-certainty, for all rows of one decode at once, with numpy.

For a raw logits row x (temperature 1, no masks) over a vocabulary of V tokens, with lse = logsumexp(x):
  confidence  -(1/k) * sum of the k largest log-probabilities = lse - mean of the k largest logits
  logprob     x[token] - lse
  certainty   KL(uniform || p) = -log V - mean_j log p_j = lse - mean_j x_j - log V

logsumexp and the mean are single passes over the row. The k largest logits of a 262k row are found without
partitioning the row: they lie within the k blocks (of BLOCK logits) with the largest block maxima (a logit
outside those blocks has k larger ones, the chosen blocks' maxima), so only those k * BLOCK logits (and the
short tail past the last whole block) are partitioned. `TraceStats` keeps one continuation's values in
preallocated buffers, so a `Watch` sees views of them token by token without any copying. `Collector` feeds
them decode by decode, or, for a small vocabulary and no watch, all at once from kept copies of the rows.
"""

from __future__ import annotations

import math

import numpy as np

from ..base import TokenStats
from .rows import BLOCK

# exp(x) of float32 logits below this, summed over a vocabulary of up to 2**24 tokens, stays far from float32's
# overflow (3.4e38, e**88.7), and a row whose maximum is above -EXP_SAFE/2 keeps its largest terms normal
# numbers: then the pass that subtracts each row's maximum first is left out
EXP_SAFE = 60.0


class RowStats:
    """Confidence over the top `k`, logsumexp and self-certainty of (R, V) float32 logits rows."""

    def __init__(self, n_vocab: int, k: int):
        self.n_vocab = n_vocab
        self.k = max(1, min(int(k), n_vocab))
        self.log_v = math.log(n_vocab)
        self.n_full = n_vocab // BLOCK  # whole blocks; the tail past them is always a candidate
        self.blocked = self.n_full >= 4 * self.k  # below that, partitioning the whole row costs no more
        self._buf = np.empty((0, n_vocab), dtype=np.float32)

    def rows(self, logits: np.ndarray, exp_blocks: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """(R, V) raw logits -> (confidence, lse, certainty), each (R,) float64. `exp_blocks`: exp(row - max)
        of every row, blocked and zero past V, when the caller has it (RowSampler.weights at temperature 1
        without masks): then no exponential is computed here."""
        r, v = logits.shape
        k = self.k
        if self.blocked:
            cut = self.n_full * BLOCK
            body = logits[:, :cut].reshape(r, self.n_full, BLOCK)
            block_max = body.max(axis=2)  # (R, n_full)
            top = block_max.max(axis=1)
            chosen = np.argpartition(block_max, self.n_full - k, axis=1)[:, self.n_full - k :]  # (R, k)
            flat = (chosen + np.arange(r)[:, None] * self.n_full).ravel()
            cand = body.reshape(r * self.n_full, BLOCK)[flat].reshape(r, k * BLOCK)
            if cut < v:
                tail = logits[:, cut:]
                top = np.maximum(top, tail.max(axis=1))
                cand = np.concatenate([cand, tail], axis=1)
            n = cand.shape[1]
            topk_sum = np.partition(cand, n - k, axis=1)[:, n - k :].sum(axis=1, dtype=np.float64)
        else:  # a small vocabulary: partition whole rows; the maximum is among their top k
            part = np.partition(logits, v - k, axis=1)[:, v - k :]
            top = part.max(axis=1)
            topk_sum = part.sum(axis=1, dtype=np.float64)
        if exp_blocks is not None:
            lse = top.astype(np.float64) + np.log(exp_blocks.reshape(r, -1).sum(axis=1).astype(np.float64))
        else:
            if self._buf.shape[0] < r:
                self._buf = np.empty((r, v), dtype=np.float32)
            e = self._buf[:r]
            # exp(x) itself, without subtracting the maximum first, unless it may overflow or underflow
            shift = not (-EXP_SAFE / 2 < top.min() and top.max() < EXP_SAFE)
            if shift:
                np.subtract(logits, top[:, None], out=e)
                np.exp(e, out=e)
            else:
                np.exp(logits, out=e)
            lse = np.log(e.sum(axis=1).astype(np.float64)) + (top.astype(np.float64) if shift else 0.0)
        mean = logits.sum(axis=1).astype(np.float64) / v
        return lse - topk_sum / k, lse, lse - mean - self.log_v


class TraceStats:
    """One continuation's statistics as it grows: float32 buffers of `cap` entries, filled token by token."""

    __slots__ = ("data", "k", "n")

    def __init__(self, cap: int, k: int):
        self.data = np.empty((3, max(1, cap)), dtype=np.float32)  # confidence, logprob, certainty
        self.k = k
        self.n = 0

    def add(self, confidence: float, logprob: float, certainty: float) -> None:
        n, d = self.n, self.data
        if n == d.shape[1]:  # more tokens than planned (a caller's max_tokens was exceeded)
            d = self.data = np.concatenate([d, np.empty_like(d)], axis=1)
        d[0, n] = confidence
        d[1, n] = logprob
        d[2, n] = certainty
        self.n = n + 1

    def view(self) -> TokenStats:
        """The values so far as views of the buffers (valid while this continuation is sampled)."""
        d, n = self.data, self.n
        return TokenStats(confidence=d[0, :n], logprob=d[1, :n], certainty=d[2, :n], top_k=self.k)

    def final(self) -> TokenStats:
        """The values as compact arrays of their own (n entries each)."""
        d = self.data[:, : self.n].copy()
        return TokenStats(confidence=d[0], logprob=d[1], certainty=d[2], top_k=self.k)


class Collector:
    """Adds each decode's token statistics to the continuations' TraceStats. Where a Watch reads them token by
    token, or rows are large, they are computed right after each decode over all its rows at once. For a small
    vocabulary without a watch, numpy's cost per call, not the row, is what a decode's statistics cost (a
    259-token row: ~100 us, as much as a step of the built-in policy): the rows are then copied and computed in
    one pass when sampling ends (`flush`), or whenever the copies pass KEEP_BYTES."""

    KEEP_BYTES = 64 << 20
    MAX_KEPT_VOCAB = 4096  # vocabularies up to this size keep rows for later

    def __init__(self, n_vocab: int, k: int, watched: bool):
        self.rows = RowStats(n_vocab, k)
        self.k = self.rows.k
        self.deferred = not watched and n_vocab <= self.MAX_KEPT_VOCAB
        self.kept: list[np.ndarray] = []  # copies of rows (deferred)
        self.marks: list[tuple[TraceStats, int, int]] = []  # (trace, row among all kept, token) in token order
        self.n_kept = 0

    def add(self, logits: np.ndarray, items: list[tuple[TraceStats, int, int]], exp_blocks=None) -> None:
        """The statistics of `items`, (trace, row of `logits`, sampled token) each, in token order."""
        if self.deferred:
            self.kept.append(logits.copy())
            self.marks.extend((t, self.n_kept + a, tok) for t, a, tok in items)
            self.n_kept += len(logits)
            if self.n_kept * logits.shape[1] * 4 >= self.KEEP_BYTES:
                self.flush()
            return
        confidence, lse, certainty = (a.tolist() for a in self.rows.rows(logits, exp_blocks))
        for t, a, tok in items:
            t.add(confidence[a], float(logits[a, tok]) - lse[a], certainty[a])

    def flush(self) -> None:
        """Compute what the kept rows hold."""
        if not self.kept:
            return
        x = np.concatenate(self.kept)
        confidence, lse, certainty = self.rows.rows(x)
        at = np.fromiter((a for _, a, _ in self.marks), dtype=np.int64, count=len(self.marks))
        toks = np.fromiter((tok for _, _, tok in self.marks), dtype=np.int64, count=len(self.marks))
        values = zip(confidence[at].tolist(), (x[at, toks] - lse[at]).tolist(), certainty[at].tolist())
        for (t, _, _), (c, lp, s) in zip(self.marks, values):
            t.add(c, lp, s)
        self.kept, self.marks, self.n_kept = [], [], 0
