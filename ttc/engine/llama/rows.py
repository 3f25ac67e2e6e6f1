"""Sampling many sequences at once from large-vocabulary logits rows, with numpy.

llama.cpp's sampler chain walks the whole vocabulary once per sequence, single-threaded, in several passes
(copy into token-data records, divide by the temperature, max, expf, running sum): for a 262k vocabulary that
costs about as much per sequence as a decode step's share of a small model. `RowSampler` draws from the same
distribution, softmax(logits / T) with end-of-generation tokens masked when asked (greedy: the first argmax),
for all logits rows of one decode in a few vectorized passes, and each draw takes one uniform from the
sequence's own generator (`generator(seed)`), so sample i still depends only on (seed, i).

The draw is an inverse CDF over two levels: the sums of blocks of BLOCK probabilities, then the one block that
holds the target; no cumulative sum over the whole vocabulary. Block sums are float32 (pairwise), searches are
float64: the distribution matches the exact one to float32 rounding, as llama.cpp's own expf does.

Only worth it for large vocabularies (MIN_VOCAB); below that llama.cpp's chain is cheap and stays, and the
built-in pair's pinned samples come from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_VOCAB = 32_768  # vocabularies at least this large sample here; smaller ones keep llama.cpp's chain
BLOCK = 512  # probabilities per block of the two-level search


def generator(seed: int) -> np.random.Generator:
    """The generator of one sequence: its draws depend only on `seed`."""
    return np.random.Generator(np.random.PCG64(int(seed)))


def applies(n_vocab: int, top_k: int, top_p: float) -> bool:
    """Whether `RowSampler` serves these settings: a large vocabulary and no top-k / top-p truncation."""
    return n_vocab >= MIN_VOCAB and (not top_k or top_k <= 0 or top_k >= n_vocab) and top_p >= 1.0


class RowSampler:
    """Draws tokens from rows of logits: softmax(row / temperature), `masked` tokens never drawn;
    temperature <= 0 is greedy (the first index of the largest unmasked logit)."""

    def __init__(self, n_vocab: int, temperature: float, masked: Sequence[int] = ()):
        self.n_vocab = n_vocab
        self.temperature = float(temperature)
        self.masked = np.asarray(sorted(set(int(t) for t in masked if 0 <= t < n_vocab)), dtype=np.int64)
        self.n_blocks = -(-n_vocab // BLOCK)
        self._buf = np.empty((0, self.n_blocks * BLOCK), dtype=np.float32)

    def greedy(self, logits: np.ndarray) -> np.ndarray:
        """(R, V) logits -> (R,) argmax of each row over the unmasked tokens."""
        best = logits.argmax(axis=1)
        if len(self.masked):
            for r in np.flatnonzero(np.isin(best, self.masked)):
                row = logits[r].copy()
                row[self.masked] = -np.inf
                best[r] = row.argmax()
        return best

    def weights(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R, V) logits -> exp((row - max) / T) as (R, n_blocks, BLOCK) float32 (zero past V and at masked
        tokens) and the cumulative block sums (R, n_blocks) float64. Valid until the next call."""
        r, v = logits.shape
        if self._buf.shape[0] < r:
            self._buf = np.zeros((r, self.n_blocks * BLOCK), dtype=np.float32)
        e = self._buf[:r]
        body = e[:, :v]
        np.divide(logits, self.temperature, out=body)
        if len(self.masked):
            body[:, self.masked] = -np.inf
        body -= body.max(axis=1, keepdims=True)
        np.exp(body, out=body)
        e[:, v:] = 0.0
        blocks = e.reshape(r, self.n_blocks, BLOCK)
        return blocks, np.cumsum(blocks.sum(axis=2), axis=1, dtype=np.float64)

    @staticmethod
    def draw(blocks: np.ndarray, cum: np.ndarray, row: int, u: float) -> int:
        """The token at which row `row`'s cumulative probability first exceeds u (in [0, 1)) of its total."""
        c = cum[row]
        target = u * c[-1]
        b = int(np.searchsorted(c, target, side="right"))
        if b >= len(c):  # rounding put the target at the very end: take the last block with weight
            b = int(np.flatnonzero(np.diff(c, prepend=0.0) > 0)[-1])
        rest = target - (c[b - 1] if b else 0.0)
        w = blocks[row, b]
        j = int(np.searchsorted(np.cumsum(w, dtype=np.float64), rest, side="right"))
        if j >= BLOCK:  # the block's float64 running sum fell just short of its float32 sum
            j = int(np.flatnonzero(w > 0)[-1])
        return b * BLOCK + j
