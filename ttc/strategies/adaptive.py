"""The compute-optimal strategy `auto` (Snell et al. 2024, section 3): estimate the problem's difficulty
from a few scored samples, then spend the rest of the budget on what the policy table says works best at
that difficulty and budget.

Nothing is thrown away: the estimation samples count against the budget and join the chosen strategy's
candidates; the final answer is chosen over the whole pool by the chosen strategy's rule (weighted PRM
vote for the PRM strategies, majority vote for majority).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import UsageError
from ..record import Candidate, Result
from .base import REGISTRY, Meter, PolicyTable, SolveContext, make_result, strategy
from .confidence import DEFAULT_KEEP, select_confident
from .sampling import sample_candidates, score_candidates, select_best, select_majority, select_weighted
from .trace import DEFAULT_SCORE


def select_by_confidence(cands: list[Candidate]) -> tuple[str | None, dict]:
    """DeepConf offline's rule over a pool (the most confident traces vote, weighted by confidence)."""
    return select_confident(cands, DEFAULT_KEEP, DEFAULT_SCORE)


FINAL_RULE = {
    "majority": select_majority, "best-of-n": select_best, "greedy": select_weighted, "deepconf": select_by_confidence,
}  # fmt: skip


@dataclass
class Estimate:
    mean_score: float  # mean aggregated PRM score of the samples (higher: easier)
    agreement: float  # share of samples giving the most common answer
    level: int | None  # 1 (easiest) .. 5 (hardest) under the policy's thresholds
    candidates: list[Candidate]


def estimate_difficulty(ctx: SolveContext, k: int, policy: PolicyTable | None) -> Estimate:
    """Sample k solutions, score them with the PRM: the mean final score is the paper's model-predicted
    difficulty; the answer agreement is reported beside it. Without a PRM the samples carry token
    statistics instead (for a confidence-weighted vote) and the mean score is 0: only agreement counts."""
    cands = sample_candidates(ctx, k, seed=ctx.seed + 104_729, stats=ctx.prm is None)
    if ctx.prm is not None:
        score_candidates(ctx, cands)
    mean, agreement = estimate_stats(cands)
    return Estimate(mean, agreement, policy.level(policy.value(mean, agreement)) if policy else None, cands)


def estimate_stats(cands: list[Candidate]) -> tuple[float, float]:
    """The mean aggregated PRM score of scored candidates and the share giving the most common answer."""
    mean = sum(c.score or 0.0 for c in cands) / max(1, len(cands))
    _, votes = select_majority(cands)
    return mean, max(votes["votes"].values(), default=0) / max(1, len(cands))


def merge(choice: str, pool: list[Candidate]) -> tuple[str | None, dict]:
    return FINAL_RULE.get(choice, select_weighted)(pool)


@strategy("auto", "compute-optimal: estimate difficulty, then the policy table's best strategy for it", needs_prm=True)
def auto(ctx: SolveContext) -> Result:
    policy = ctx.table
    if policy is None:
        raise UsageError(
            f"{ctx.preset.source or ctx.preset.name}: --strategy auto needs a calibrated policy "
            "(preset key `policy:`; make one with ttc calibrate)"
        )
    meter = Meter(ctx)
    k = min(policy.samples, ctx.budget)
    est = estimate_difficulty(ctx, k, policy)
    choice, table_budget, spend = policy.plan(est.level, ctx.budget)
    if ctx.thinks and REGISTRY[choice.strategy].stepwise:
        # a thinking trace has no steps to search: the same spend goes to parallel traces and a vote
        instead = "weighted-best-of-n" if ctx.prm is not None else "deepconf"
        ctx.warn(f"auto: {choice.strategy} searches steps, which a thinking trace lacks; {instead} spends its budget")
        choice = dataclasses.replace(choice, strategy=instead, options={})
    rest = spend - k
    pool = list(est.candidates)
    sub_generations = 0.0
    if rest > 0:
        sub = dataclasses.replace(ctx, budget=rest, options=dict(choice.options), notes=ctx.notes)
        try:
            result = REGISTRY[choice.strategy].run(sub)
        except UsageError:
            # The rest of the budget is below what the choice needs (a beam wider than the rest): sample it.
            result = REGISTRY["weighted-best-of-n" if ctx.prm is not None else "majority"].run(sub)
        if result.candidates and result.candidates[0].score is None and ctx.prm is not None:
            score_candidates(ctx, result.candidates)
        pool += result.candidates
        sub_generations = result.spent.generations
    answer, details = merge(choice.strategy, pool)
    details.update(
        {
            "level": est.level,
            "mean_score": round(est.mean_score, 6) if ctx.prm is not None else None,
            "agreement": round(est.agreement, 4),
            "estimation_samples": k,
            "chosen": {
                "strategy": choice.strategy,
                "options": choice.options,
                "table_budget": table_budget,
                "spend": spend,
            },  # fmt: skip
            "policy": policy.source,
        }
    )
    return make_result(ctx, "auto", meter, pool, answer, generations=k + sub_generations, details=details)
