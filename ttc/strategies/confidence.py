"""Confidence strategies: what the policy's own token statistics say about each trace, with no reward model and
no extra decode (the statistics come from the logits rows sampling already read; see trace.py for the scores).

deepconf (Fu et al. 2025, "Deep Think with Confidence"), --opt mode=offline|online:
  offline  N traces; keep the most confident `keep` fraction of those with an answer (by --opt score), and
           vote, each kept trace weighted by that score. Traces are independent samples: `subset` holds.
  online   `warmup` traces set a threshold, the `percentile` of their lowest group confidences (90: only
           about the top 10% pass, DeepConf-low; 10: DeepConf-high). Every later trace is watched token by
           token and stopped as soon as its current group confidence (the mean of its last `window` token
           confidences) falls below the threshold; the run stops once the leading answer holds `consensus`
           of the confidence-weighted vote. Voters: warm-up traces at or above the threshold and later traces
           that were not stopped, each weighted by its lowest group confidence (as DeepConf's reference code).
           Later traces run in waves of `wave` (default: the warm-up size) with the seeds an offline run
           gives the same indices, so a trace that is never stopped is exactly offline's.
self-certainty (Kang et al. 2025), --opt select=best|borda: the trace with the highest mean self-certainty,
  or a vote in which the trace ranked r of N by self-certainty weighs (N - r + 1) ** power (power 0.5).
"""

from __future__ import annotations

import dataclasses
import math
import statistics

from ..engine.base import Completion, Watch, shift_seed
from ..errors import UsageError
from ..record import Candidate, Result
from .base import Meter, SolveContext, candidate, choice_option, make_result, number_option, scale_spent, strategy
from .sampling import check_stats, sample_candidates, window_option
from .trace import CONFIDENCE_TOP_K, DEFAULT_SCORE, SCORES, window_for
from .voting import weighted_vote

MODES = ("offline", "online")
DEFAULT_KEEP = 0.9  # offline: the share of traces kept
# online: the threshold's percentile of the warm-up scores. DeepConf-low (90) and -high (10) are the paper's;
# on 1,200 calibration problems of the built-in policy at budget 16 (none of the shipped 500), 90 cost 8 points
# of accuracy against majority@16 (49.5% vs 57.8%), 10-30 none (57.5-57.9%) at 0.70-0.71x its tokens, 40-50
# two points at 0.58x: its confidence tells right from wrong only weakly (AUROC ~0.6 within a problem)
DEFAULT_PERCENTILE = 30.0
DEFAULT_CONSENSUS = 0.95
MAX_WARMUP = 16  # DeepConf's warm-up
CONSENSUS_MIN_VOTES = 2  # a share is only a consensus with at least this many votes behind it


def default_warmup(budget: int) -> int:
    """DeepConf's 16 warm-up traces, but at most a quarter of the budget (at least 1), so that a small
    budget keeps most of its traces for the watched phase: 1 at budget 4, 4 at 16, 16 from 64 up."""
    return min(MAX_WARMUP, max(1, budget // 4))


# -- offline --------------------------------------------------------------------------------------------------
def select_confident(cands: list[Candidate], keep: float, score: str) -> tuple[str | None, dict]:
    """Keep the ceil(keep * n) highest-scoring of the n candidates with an answer (the earlier among equals),
    then the answer with the largest sum of their scores."""
    answered = [i for i, c in enumerate(cands) if c.answer is not None]
    n_keep = max(1, math.ceil(keep * len(answered) - 1e-9)) if answered else 0
    kept = sorted(sorted(answered, key=lambda i: (-cands[i].trace_scores[score], i))[:n_keep])
    vote = weighted_vote([cands[i].answer for i in kept], [cands[i].trace_scores[score] for i in kept])
    return vote.answer, {"kept": kept, "weights": {a: round(w, 6) for a, w in vote.tally.items()}}


def _offline(ctx: SolveContext, keep: float, score: str, window: int | None) -> Result:
    meter = Meter(ctx)
    cands = sample_candidates(ctx, ctx.budget, stats=True, window=window)
    for c in cands:
        c.score = c.trace_scores[score]
    answer, details = select_confident(cands, keep, score)
    details.update(mode="offline", keep=keep, score=score)
    return make_result(ctx, "deepconf", meter, cands, answer, generations=len(cands), details=details)


def _deepconf_subset(result: Result, k: int) -> Result:
    if result.details.get("mode") != "offline":
        raise ValueError("deepconf mode=online watches its traces: a smaller budget is not a prefix of them")
    cands = result.candidates[:k]
    answer, details = select_confident(cands, result.details["keep"], result.details["score"])
    details.update(
        mode="offline", keep=result.details["keep"], score=result.details["score"], subset_of_budget=result.budget
    )
    spent = scale_spent(result.spent, result, k)
    return dataclasses.replace(result, answer=answer, budget=k, candidates=cands, spent=spent, details=details)


# -- online ---------------------------------------------------------------------------------------------------
class _ThresholdWatch(Watch):
    """Stops a trace once the mean confidence of its last `window` tokens is below `threshold`, and every
    trace once `stop_all` is set (consensus). `on_end(index, completion)` hears of each trace's end."""

    def __init__(self, threshold: float, window: int, on_end):
        self.threshold, self.window, self.on_end = threshold, window, on_end
        self.sums: dict[int, float] = {}  # running sum of each trace's last `window` confidences
        self.low: set[int] = set()  # traces stopped below the threshold
        self.stop_all = False

    def step(self, index: int, stats) -> bool:
        if self.stop_all:
            return False
        c, w = stats.confidence, self.window
        n = len(c)
        s = self.sums.get(index, 0.0) + float(c[n - 1])
        if n > w:
            s -= float(c[n - 1 - w])
        self.sums[index] = s
        if n >= w and s / w < self.threshold:
            self.low.add(index)
            return False
        return True

    def finished(self, index: int, completion: Completion) -> None:
        self.on_end(index, completion)


def _online(
    ctx: SolveContext, warmup: int, percentile: float, consensus: float, window: int | None, wave: int
) -> Result:
    meter = Meter(ctx)
    prompt = ctx.prompt()
    params = dataclasses.replace(ctx.sampling, seed=ctx.seed, stats_top_k=CONFIDENCE_TOP_K)
    warm = ctx.policy.sample(prompt, warmup, params)
    check_stats(ctx, warm)
    w = window if window is not None else window_for(statistics.median(c.n_generated for c in warm))
    cands = [candidate(ctx, c, w) for c in warm]
    threshold = _percentile([c.trace_scores["lowest-group"] for c in cands], percentile)
    voters: list[tuple[str, float]] = []

    def vote_for(c: Candidate) -> None:
        c.score = c.trace_scores["lowest-group"]
        if c.finish_reason != "killed" and c.answer is not None and c.score >= threshold:
            voters.append((c.answer, c.score))

    for c in cands:
        vote_for(c)
    killed_low, stopped_consensus, stopped = 0, 0, "budget"
    ended: dict[int, Candidate] = {}  # the current wave's traces that ended, by index within the wave

    def on_end(index: int, completion: Completion) -> None:
        c = ended[index] = candidate(ctx, completion, w)
        vote_for(c)
        if _settled(voters, consensus):
            watch.stop_all = True

    while len(cands) < ctx.budget and not _settled(voters, consensus):
        first, k = len(cands), min(wave, ctx.budget - len(cands))
        ended.clear()
        watch = _ThresholdWatch(threshold, w, on_end)
        done = ctx.policy.sample(prompt, k, dataclasses.replace(params, seed=shift_seed(ctx.seed, first)), watch)
        check_stats(ctx, done)
        cands.extend(ended[i] if i in ended else candidate(ctx, c, w) for i, c in enumerate(done))
        for i, c in enumerate(done):  # a trace told to stop on the token it ended on anyway was not stopped
            if c.finish_reason == "killed":
                killed_low += i in watch.low
                stopped_consensus += i not in watch.low
    if _settled(voters, consensus):
        stopped = "consensus"
    vote = weighted_vote([a for a, _ in voters], [s for _, s in voters])
    generations, saved = _online_cost(cands, ctx.budget)
    details = {
        "mode": "online", "threshold": round(threshold, 6), "window": w, "warmup": warmup, "percentile": percentile,
        "consensus": consensus, "stopped": stopped, "launched": len(cands), "voters": len(voters),
        "killed": killed_low, "stopped_at_consensus": stopped_consensus,
        "killed_tokens": sum(c.tokens for c in cands if c.finish_reason == "killed"),
        "saved_tokens_estimate": saved,
        "weights": {a: round(x, 6) for a, x in vote.tally.items()},
    }  # fmt: skip
    return make_result(ctx, "deepconf", meter, cands, vote.answer, generations=generations, details=details)


def _online_cost(cands: list[Candidate], budget: int) -> tuple[float, int]:
    """(generation-equivalents spent, tokens saved against running all `budget` traces to their end).

    A trace that ended on its own costs 1. A stopped trace's full length is unknown: it is estimated as the
    larger of what it reached and the mean length L of the traces that ended on their own (at least the
    warm-up), so it costs t / max(t, L) <= 1 and saved max(0, L - t) tokens; a trace never launched (the run
    stopped at consensus) saves L. So spent.generations never exceeds the traces launched, nor the budget."""
    natural = [c.tokens for c in cands if c.finish_reason != "killed"]
    mean_len = sum(natural) / len(natural)
    spent, saved = float(len(natural)), 0.0
    for c in cands:
        if c.finish_reason == "killed":
            spent += c.tokens / max(c.tokens, mean_len)
            saved += max(0.0, mean_len - c.tokens)
    saved += (budget - len(cands)) * mean_len
    return spent, round(saved)


def _settled(voters: list[tuple[str, float]], consensus: float) -> bool:
    """Whether the leading answer holds at least `consensus` of the vote's total weight."""
    if len(voters) < CONSENSUS_MIN_VOTES:
        return False
    vote = weighted_vote([a for a, _ in voters], [s for _, s in voters])
    total = sum(vote.tally.values())
    return total > 0 and vote.tally[vote.answer] / total >= consensus


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile with linear interpolation between order statistics (numpy's default)."""
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


@strategy(
    "deepconf",
    "DeepConf, no PRM: mode=offline keeps the most confident traces (keep=0.9) for a confidence-weighted vote; "
    "mode=online stops traces whose window confidence falls below a warm-up threshold (warmup=budget/4 up to "
    "16, percentile=30; 90 is DeepConf-low) and stops at consensus=0.95; window: min(2048, half a trace)",
    subset=_deepconf_subset,
    subset_when=lambda options: str(options.get("mode", "offline")) == "offline",
)
def deepconf(ctx: SolveContext) -> Result:
    # every option given is checked, whichever mode it belongs to; then one of the other mode is refused
    mode = choice_option(ctx, "mode", MODES, "offline")
    window = window_option(ctx)
    score = choice_option(ctx, "score", SCORES, DEFAULT_SCORE)
    keep = number_option(ctx, "keep", DEFAULT_KEEP, 0, 1, open_low=True)
    warmup = default_warmup(ctx.budget)
    if "warmup" in ctx.options:
        warmup = int(number_option(ctx, "warmup", 0, 1, integer=True))
        if warmup >= ctx.budget:
            raise UsageError(
                f"--opt warmup={warmup} leaves nothing of --budget {ctx.budget} to watch; use a smaller warm-up"
            )
    percentile = number_option(ctx, "percentile", DEFAULT_PERCENTILE, 0, 100, open_low=True, open_high=True)
    consensus = number_option(ctx, "consensus", DEFAULT_CONSENSUS, 0, 1, open_low=True)
    wave = int(number_option(ctx, "wave", warmup, 1, integer=True))
    other = ("warmup", "percentile", "consensus", "wave") if mode == "offline" else ("keep",)
    for key in other:
        if key in ctx.options:
            raise UsageError(
                f"--opt {key} is an option of deepconf's other mode; add --opt mode=" + MODES[mode == "offline"]
            )
    if mode == "offline":
        return _offline(ctx, keep, score, window)
    if "score" in ctx.options and score != "lowest-group":
        raise UsageError(
            "deepconf mode=online stops and weighs traces by lowest-group; --opt score is for mode=offline"
        )
    return _online(ctx, warmup, percentile, consensus, window, wave)


# -- self-certainty -------------------------------------------------------------------------------------------
def select_certain(cands: list[Candidate], select: str, power: float) -> tuple[str | None, dict]:
    """best: the answer of the most self-certain candidate with one; borda: a vote in which the candidate
    ranked r of N by self-certainty (1 = most certain, the earlier among equals) weighs (N - r + 1) ** power."""
    cert = [c.trace_scores["self-certainty"] for c in cands]
    if any(math.isnan(x) for x in cert):
        raise UsageError("self-certainty needs full logits rows; this backend gave only top-k log-probabilities")
    if select == "best":
        best = max((i for i, c in enumerate(cands) if c.answer is not None), key=lambda i: (cert[i], -i), default=None)
        if best is None:
            return None, {"best_index": None}
        return cands[best].answer, {"best_index": best, "best_score": round(cert[best], 6)}
    n = len(cands)
    order = sorted(range(n), key=lambda i: (-cert[i], i))
    weight = [0.0] * n
    for r, i in enumerate(order, start=1):
        weight[i] = (n - r + 1) ** power
    vote = weighted_vote([c.answer for c in cands], weight)
    return vote.answer, {"weights": {a: round(w, 6) for a, w in vote.tally.items()}}


def _certainty_options(ctx: SolveContext) -> tuple[str, float]:
    return choice_option(ctx, "select", ("best", "borda"), "borda"), number_option(ctx, "power", 0.5, 0)


def _certainty_subset(result: Result, k: int) -> Result:
    cands = result.candidates[:k]
    answer, details = select_certain(cands, result.details["select"], result.details["power"])
    details.update(select=result.details["select"], power=result.details["power"], subset_of_budget=result.budget)
    spent = scale_spent(result.spent, result, k)
    return dataclasses.replace(result, answer=answer, budget=k, candidates=cands, spent=spent, details=details)


@strategy(
    "self-certainty",
    "N samples scored by self-certainty (mean KL(uniform || p)), no PRM: select=borda (rank-weighted vote, "
    "power=0.5) or best",
    subset=_certainty_subset,
)
def self_certainty(ctx: SolveContext) -> Result:
    select, power = _certainty_options(ctx)
    meter = Meter(ctx)
    cands = sample_candidates(ctx, ctx.budget, stats=True, window=window_option(ctx))
    for c in cands:
        c.score = c.trace_scores["self-certainty"]
    answer, details = select_certain(cands, select, power)
    details.update(select=select, power=power)
    return make_result(ctx, "self-certainty", meter, cands, answer, generations=len(cands), details=details)
