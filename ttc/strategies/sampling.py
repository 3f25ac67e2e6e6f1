"""Strategies that sample whole solutions in parallel: greedy and majority vote (self-consistency).

All of a strategy's samples come from one batched `engine.sample` call, so the prompt is evaluated once.
"""

from __future__ import annotations

import dataclasses

from ..record import Result
from ..voting import majority_vote
from .base import Meter, SolveContext, candidate, make_result, strategy


@strategy("greedy", "one solution at temperature 0 (the baseline; spends 1 of the budget)")
def greedy(ctx: SolveContext) -> Result:
    meter = Meter(ctx)
    params = dataclasses.replace(ctx.sampling, temperature=0.0, seed=ctx.seed)
    cands = [candidate(ctx, c) for c in ctx.policy.sample(ctx.prompt(), 1, params)]
    return make_result(ctx, "greedy", meter, cands, cands[0].answer, generations=1)


@strategy("majority", "N samples, the most frequent answer wins (self-consistency)")
def majority(ctx: SolveContext) -> Result:
    meter = Meter(ctx)
    params = dataclasses.replace(ctx.sampling, seed=ctx.seed)
    cands = [candidate(ctx, c) for c in ctx.policy.sample(ctx.prompt(), ctx.budget, params)]
    vote = majority_vote([c.answer for c in cands])
    details = {"votes": {a: int(v) for a, v in vote.tally.items()}, "no_answer": sum(c.answer is None for c in cands)}
    return make_result(ctx, "majority", meter, cands, vote.answer, generations=len(cands), details=details)
