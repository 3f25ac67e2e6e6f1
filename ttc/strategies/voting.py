"""Voting over candidate answers: small pure functions, registered by name, tested alone.

Answers are grouped when their normalized text is equal, and groups are merged when math-verify judges
their representatives equivalent (so `1/2` and `0.5` vote together). Grouping keeps the order in which
answers first appeared, which breaks ties: the earliest answer wins among equals.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..answers import is_equivalent
from ..answers.normalize import normalize_answer_text


@dataclass
class Vote:
    answer: str | None  # the winning answer (its first spelling), None when no candidate had one
    tally: dict[str, float]  # answer (first spelling) -> total weight, in order of first appearance
    members: dict[str, list[int]]  # answer -> indices of the candidates that gave it


def group_answers(answers: Sequence[str | None], equivalent: Callable[[str, str], bool] | None = None) -> dict:
    """Map each distinct answer (first spelling) to the indices of candidates giving it; None is left out."""
    equivalent = equivalent or (lambda a, b: is_equivalent(a, b, timeout_s=2.0))
    groups: dict[str, list[int]] = {}
    by_norm: dict[str, str] = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        norm = normalize_answer_text(a)
        rep = by_norm.get(norm)
        if rep is None:
            rep = next((r for r in groups if _same(a, r, equivalent)), None)
            if rep is None:
                rep = a
                groups[rep] = []
            by_norm[norm] = rep
        groups[rep].append(i)
    return groups


def _same(a: str, b: str, equivalent: Callable[[str, str], bool]) -> bool:
    """Plain numbers compare as numbers (fast); anything else goes to `equivalent`."""
    x, y = _as_number(a), _as_number(b)
    if x is not None and y is not None:
        return x == y
    return equivalent(a, b)


_NUMBER = re.compile(r"[+-]?(\d+|\d{1,3}(,\d{3})+)(\.\d+)?")


def _as_number(a: str) -> float | None:
    a = a.strip()
    return float(a.replace(",", "")) if _NUMBER.fullmatch(a) else None


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float], **kw) -> Vote:
    """The answer with the largest total weight (majority voting is all weights 1)."""
    groups = group_answers(answers, **kw)
    tally = {rep: float(sum(weights[i] for i in idx)) for rep, idx in groups.items()}
    best = max(tally, key=lambda r: tally[r], default=None)  # max keeps the first of equals
    return Vote(answer=best, tally=tally, members=groups)


def majority_vote(answers: Sequence[str | None], **kw) -> Vote:
    return weighted_vote(answers, [1.0] * len(answers), **kw)
