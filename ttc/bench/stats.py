"""The statistics behind a bench's numbers: how sure an accuracy is, and whether two cells really differ.

    wilson(k, n)        the Wilson score interval of a proportion k/n (95%): right at 0/n and n/n and
                        for small n, where the textbook p +- 1.96 sd interval leaves [0, 1] or has width 0
    pair(a, b)          two cells (strategy x budget) on the problems both answered: the difference in
                        accuracy with Newcombe's hybrid score interval for paired proportions (his
                        method 10, Stat Med 1998, 17:2635), the discordant counts b (a right, b wrong)
                        and c (a wrong, b right), and the exact two-sided McNemar p-value (a binomial
                        test of b against b + c at 1/2)

Newcombe's interval is built from each cell's Wilson interval and the correlation between the cells, so it
needs no resampling and gives the same numbers every time. Pure functions, no numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5% point of the standard normal
ACCURACY_INTERVAL = "Wilson score, 95%"
PAIRED_INTERVAL = "Newcombe hybrid score for paired proportions (method 10), 95%; exact McNemar p"


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n; (0, 1) when n is 0 (nothing is known)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"wilson: k={k} is not between 0 and n={n}")
    p, z2 = k / n, z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # At k = 0 or k = n one bound is exactly 0 or 1; rounding must not put it a hair outside.
    lo = 0.0 if k == 0 else max(0.0, center - half)
    hi = 1.0 if k == n else min(1.0, center + half)
    return lo, hi


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(a split at least as uneven as b:c) with b + c fair coin tosses."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1)) / 2**m
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Paired:
    """Two cells compared on the same n problems: both right, only a right (b), only b right (c), neither."""

    both: int
    b: int  # a right, b wrong
    c: int  # a wrong, b right
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.b + self.c + self.neither

    @property
    def accuracy_a(self) -> float:
        return (self.both + self.b) / self.n if self.n else 0.0

    @property
    def accuracy_b(self) -> float:
        return (self.both + self.c) / self.n if self.n else 0.0

    @property
    def difference(self) -> float:
        """accuracy of a minus accuracy of b, as a fraction."""
        return (self.b - self.c) / self.n if self.n else 0.0

    def interval(self, z: float = Z95) -> tuple[float, float]:
        """Newcombe's method 10: the square-and-add of the two Wilson intervals, corrected for correlation."""
        n = self.n
        if n == 0:
            return -1.0, 1.0
        ka, kb = self.both + self.b, self.both + self.c
        p1, p2 = ka / n, kb / n
        l1, u1 = wilson(ka, n, z)
        l2, u2 = wilson(kb, n, z)
        phi = 0.0
        margins = ka * (n - ka) * kb * (n - kb)
        if margins > 0:
            cross = self.both * self.neither - self.b * self.c
            if cross > n / 2:  # continuity-corrected, as Newcombe's method 10
                phi = (cross - n / 2) / math.sqrt(margins)
            elif cross < 0:
                phi = cross / math.sqrt(margins)
        d = p1 - p2
        lo = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
        hi = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
        return max(-1.0, lo), min(1.0, hi)

    @property
    def p_value(self) -> float:
        return mcnemar_exact(self.b, self.c)


def pair(a: dict[str, bool], b: dict[str, bool]) -> Paired:
    """Count agreement of two cells, each {problem id: correct}, over the problems both have."""
    both = b_only = c_only = neither = 0
    for key in a.keys() & b.keys():
        x, y = bool(a[key]), bool(b[key])
        if x and y:
            both += 1
        elif x:
            b_only += 1
        elif y:
            c_only += 1
        else:
            neither += 1
    return Paired(both, b_only, c_only, neither)
