"""Strategies that sample whole solutions in parallel, then choose: greedy, majority vote
(self-consistency), best-of-N and weighted best-of-N with a PRM, and adaptive early stopping.

best-of-n and weighted-best-of-n have a PRM-free form: `--opt weight=confidence` scores each sample by its
trace confidence (--opt score=lowest-group|bottom-10|tail|mean|self-certainty, see trace.py), computed from
the logits sampling already read, and loads no reward model. Without that option they use the preset's
PRM, or the policy judging itself where the preset has none.

All samples of a run come from batched `engine.sample` calls, so the prompt is evaluated once. Sample i's
seed depends only on i, so the first k candidates of a run at budget N are exactly a run at budget k:
each of these strategies can derive smaller budgets from one run (`subset`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from ..engine.base import Completion
from ..errors import UsageError
from ..record import Candidate, Result
from .base import Meter, SolveContext, candidate, choice_option, make_result, number_option, scale_spent, strategy
from .trace import CONFIDENCE_TOP_K, DEFAULT_SCORE, SCORES
from .voting import majority_vote, weighted_vote

Selector = Callable[[list[Candidate]], tuple[str | None, dict]]


def select_majority(cands: list[Candidate]) -> tuple[str | None, dict]:
    vote = majority_vote([c.answer for c in cands])
    details = {"votes": {a: int(v) for a, v in vote.tally.items()}, "no_answer": sum(c.answer is None for c in cands)}
    return vote.answer, details


def select_best(cands: list[Candidate]) -> tuple[str | None, dict]:
    """The answer of the candidate with the highest aggregated PRM score (first among equals)."""
    scored = [(c.score if c.score is not None else -1.0, -i) for i, c in enumerate(cands) if c.answer is not None]
    if not scored:
        return None, {"best_index": None}
    score, neg_i = max(scored)
    return cands[-neg_i].answer, {"best_index": -neg_i, "best_score": round(score, 6)}


def select_weighted(cands: list[Candidate]) -> tuple[str | None, dict]:
    """The answer whose candidates' aggregated PRM scores add up highest."""
    vote = weighted_vote([c.answer for c in cands], [c.score or 0.0 for c in cands])
    return vote.answer, {"weights": {a: round(w, 6) for a, w in vote.tally.items()}}


def score_candidates(ctx: SolveContext, cands: list[Candidate]) -> None:
    """Fill each candidate's per-step scores and aggregated score from the reward model."""
    per_step = ctx.prm.score(ctx.problem, [c.steps for c in cands])
    for c, s in zip(cands, per_step):
        c.scores = [round(x, 6) for x in s]
        c.score = round(ctx.prm.aggregate(s), 6)


def sample_candidates(
    ctx: SolveContext, n: int, seed: int | None = None, stats: bool = False, window: int | None = None
) -> list[Candidate]:
    """n samples of the problem; with `stats`, sampled with token statistics and carrying trace scores
    (group scores over `window` tokens, default trace.window_for)."""
    params = dataclasses.replace(
        ctx.sampling, seed=ctx.seed if seed is None else seed, stats_top_k=CONFIDENCE_TOP_K if stats else 0
    )
    comps = ctx.policy.sample(ctx.prompt(), n, params)
    if stats:
        check_stats(ctx, comps)
    return [candidate(ctx, c, window) for c in comps]


def check_stats(ctx: SolveContext, comps: list[Completion]) -> None:
    """Refuse completions without the token statistics that were asked for (a backend that has none)."""
    if any(c.stats is None for c in comps):
        raise UsageError(
            f"{ctx.policy.info.name}: this backend returned no token statistics, which confidence scores need"
        )


def window_option(ctx: SolveContext) -> int | None:
    """--opt window: the group window in tokens (at least 1); None (absent or 'auto'): trace.window_for."""
    if str(ctx.options.get("window", "auto")) == "auto":
        return None
    return int(number_option(ctx, "window", 0, 1, integer=True))


def confidence_weighted(options: dict) -> bool:
    """weight=confidence: trace confidence in place of a reward model's score."""
    return str(options.get("weight", "prm")) == "confidence"


def score_with_confidence(ctx: SolveContext, cands: list[Candidate]) -> str:
    """Set each candidate's score to its trace score named by --opt score (default DEFAULT_SCORE)."""
    name = choice_option(ctx, "score", SCORES, DEFAULT_SCORE)
    for c in cands:
        c.score = c.trace_scores[name]
    return name


def _sampled(name: str, summary: str, select: Selector, needs_prm: bool) -> None:
    def subset(result: Result, k: int) -> Result:
        cands = result.candidates[:k]
        answer, details = select(cands)
        details["subset_of_budget"] = result.budget
        spent = scale_spent(result.spent, result, k)
        return dataclasses.replace(result, answer=answer, budget=k, candidates=cands, spent=spent, details=details)

    def run(ctx: SolveContext) -> Result:
        meter = Meter(ctx)
        weight = choice_option(ctx, "weight", ("prm", "confidence"), "prm") if needs_prm else None
        window = window_option(ctx) if weight == "confidence" else None
        cands = sample_candidates(ctx, ctx.budget, stats=weight == "confidence", window=window)
        extra = {}
        if weight == "confidence":
            extra = {"weight": "confidence", "score": score_with_confidence(ctx, cands)}
        elif needs_prm:
            score_candidates(ctx, cands)
        answer, details = select(cands)
        return make_result(ctx, name, meter, cands, answer, generations=len(cands), details={**details, **extra})

    prm_free = confidence_weighted if needs_prm else None
    strategy(name, summary, needs_prm=needs_prm, subset=subset, prm_free=prm_free)(run)


def _greedy_subset(result: Result, k: int) -> Result:
    """Greedy spends 1 whatever the budget: a run at any budget is the run at every budget."""
    return dataclasses.replace(result, budget=k, details={**result.details, "subset_of_budget": result.budget})


@strategy("greedy", "one solution at temperature 0 (the baseline; spends 1 of the budget)", subset=_greedy_subset)
def greedy(ctx: SolveContext) -> Result:
    meter = Meter(ctx)
    params = dataclasses.replace(ctx.sampling, temperature=0.0, seed=ctx.seed)
    cands = [candidate(ctx, c) for c in ctx.policy.sample(ctx.prompt(), 1, params)]
    return make_result(ctx, "greedy", meter, cands, cands[0].answer, generations=1)


_sampled("majority", "N samples, the most frequent answer wins (self-consistency)", select_majority, False)
_sampled(
    "best-of-n", "N samples, the one with the highest PRM score wins (weight=confidence: trace confidence, no PRM)",
    select_best, True,
)  # fmt: skip
_sampled(
    "weighted-best-of-n",
    "N samples, the answer with the largest sum of PRM scores wins (weight=confidence: of trace confidences)",
    select_weighted, True,
)  # fmt: skip


def leader_is_settled(counts: list[int], confidence: float) -> bool:
    """The stopping rule of `adaptive`: with a uniform Beta prior on the leader's share p among the votes
    for the two leading answers (a wins for the leader, b for the runner-up), stop once
    P(p > 1/2 | a, b) >= confidence. For integer a, b: P(Beta(a+1, b+1) > 1/2) = P(Bin(a+b+1, 1/2) <= a)."""
    top = sorted(counts, reverse=True) + [0, 0]
    a, b = top[0], top[1]
    n = a + b + 1
    prob = sum(math.comb(n, i) for i in range(a + 1)) / 2**n
    return prob >= confidence


@strategy("adaptive", "majority vote in small waves, stopping once the leading answer is settled (Beta rule)")
def adaptive(ctx: SolveContext) -> Result:
    """Sample waves of `wave` (default 4) solutions; after each, stop when `leader_is_settled` holds at
    `confidence` or the budget is spent. The unspent budget is left unspent.

    The default confidence, 0.8, was chosen on the built-in pair's calibration set (300 problems apart from
    the shipped 500): at budget 64 it stopped after 12.5 samples on average at 56.3% (majority@64: 56.7%),
    where 0.95 needed 25.7 for 57.7%. Ask for more with --opt confidence=0.95."""
    meter = Meter(ctx)
    wave = int(ctx.options.get("wave", 4))
    confidence = float(ctx.options.get("confidence", 0.8))
    cands: list[Candidate] = []
    stopped = "budget"
    for w in range(ctx.budget):
        n = min(wave, ctx.budget - len(cands))
        if n <= 0:
            break
        cands.extend(sample_candidates(ctx, n, seed=ctx.seed + 7_919 * w))
        _, details = select_majority(cands)
        if leader_is_settled(list(details["votes"].values()), confidence):
            stopped = "settled"
            break
    answer, details = select_majority(cands)
    details.update({"stopped": stopped, "wave": wave, "confidence": confidence})
    return make_result(ctx, "adaptive", meter, cands, answer, generations=len(cands), details=details)
