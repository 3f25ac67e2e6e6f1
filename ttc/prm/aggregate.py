"""Turning per-step reward scores into one score per solution: small pure functions, registered by name.

`last` is the default: Snell et al. found the last step's score the best predictor of a correct answer
for a PRM trained with "good only if every step so far is right" labels. An empty list of steps scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ..errors import UsageError


def last(scores: Sequence[float]) -> float:
    return float(scores[-1]) if scores else 0.0


def minimum(scores: Sequence[float]) -> float:
    return float(min(scores)) if scores else 0.0


def product(scores: Sequence[float]) -> float:
    return float(math.prod(scores)) if scores else 0.0


def mean(scores: Sequence[float]) -> float:
    return float(sum(scores) / len(scores)) if scores else 0.0


AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "last": last,
    "min": minimum,
    "prod": product,
    "mean": mean,
}


def get_aggregation(name: str) -> Callable[[Sequence[float]], float]:
    if name not in AGGREGATIONS:
        raise UsageError(f"unknown PRM aggregation '{name}' (known: {', '.join(AGGREGATIONS)})")
    return AGGREGATIONS[name]
