"""Strategies that sample whole solutions in parallel: greedy and majority vote (self-consistency).

All of a strategy's samples come from one batched `engine.sample` call, so the prompt is evaluated once.
"""

from __future__ import annotations

import dataclasses

from ..record import Candidate, Result
from ..voting import majority_vote
from .base import Meter, SolveContext, candidate, make_result, scale_spent, strategy


@strategy("greedy", "one solution at temperature 0 (the baseline; spends 1 of the budget)")
def greedy(ctx: SolveContext) -> Result:
    meter = Meter(ctx)
    params = dataclasses.replace(ctx.sampling, temperature=0.0, seed=ctx.seed)
    cands = [candidate(ctx, c) for c in ctx.policy.sample(ctx.prompt(), 1, params)]
    return make_result(ctx, "greedy", meter, cands, cands[0].answer, generations=1)


def _majority_details(cands: list[Candidate]) -> tuple[str | None, dict]:
    vote = majority_vote([c.answer for c in cands])
    details = {"votes": {a: int(v) for a, v in vote.tally.items()}, "no_answer": sum(c.answer is None for c in cands)}
    return vote.answer, details


def _majority_subset(result: Result, k: int) -> Result:
    cands = result.candidates[:k]
    answer, details = _majority_details(cands)
    details["subset_of_budget"] = result.budget
    return dataclasses.replace(
        result, answer=answer, budget=k, candidates=cands, spent=scale_spent(result.spent, result, k), details=details
    )


@strategy("majority", "N samples, the most frequent answer wins (self-consistency)", subset=_majority_subset)
def majority(ctx: SolveContext) -> Result:
    meter = Meter(ctx)
    params = dataclasses.replace(ctx.sampling, seed=ctx.seed)
    cands = [candidate(ctx, c) for c in ctx.policy.sample(ctx.prompt(), ctx.budget, params)]
    answer, details = _majority_details(cands)
    return make_result(ctx, "majority", meter, cands, answer, generations=len(cands), details=details)
