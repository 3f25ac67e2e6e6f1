"""A total budget for a whole file: how many samples each problem gets (`--total-budget T`, `--total-tokens T`).

Every problem draws from one stream of samples (weighted best-of-N's: sample i of a problem is the same in
every run, so any allocation is a choice of how long a prefix of each stream to take), and its answer is the
PRM-weighted vote over the samples it got. Four ways to split the total:

    uniform           the same for every problem (T // n, the first T % n one more): weighted-best-of-n
                      at T/n per problem
    allocator         every problem first draws the policy's estimation samples (4); their mean PRM score and
                      answer agreement give its level (1 easiest .. 5 hardest) under the calibrated policy
                      `auto` uses; the rest of the total is then planned once, greedily, where the calibrated
                      accuracy curve of weighted best-of-N at that level rises most per sample (the upper
                      concave hull of the curve, so a flat stretch before a rise is bridged)
    allocator+online  the same plan, then spent in waves: a problem whose answer no longer changes with more
                      samples (`flip_chance` below `settle`) stops early, and what it leaves, with anything the
                      plan did not place, goes wave by wave to the problem where the next samples are likeliest
                      to change the answer, per sample
    stream            as `ttc solve -` must: problems one at a time, in order, without seeing the ones to
                      come (see `plan_one`)

A preset without a calibrated policy uses PRIOR_CURVES on the prior's agreement levels (policy.prior).

The total is never exceeded: a wave is drawn only if it fits in the worst case (generations: k samples cost
k; tokens: k samples cost at most k x max_tokens), so near the end waves shrink, and what cannot fit stays
unspent and is reported. Everything is deterministic: the same streams, levels and order give the same plan.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..record import Candidate
from ..strategies.adaptive import estimate_stats
from ..strategies.sampling import select_weighted
from .table import LEVELS, Policy

MODES = ("uniform", "allocator", "allocator+online", "stream")
CURVE_STRATEGY = "weighted-best-of-n"  # whose calibrated accuracy per level and budget the plan follows
# The prior's accuracy curves (level -> samples -> expected accuracy) for a preset with no calibrated policy:
# a hand-set shape, not a measurement, after the paper's finding that easy problems gain little from more
# samples, medium ones gain up to a few tens of samples, and the hardest gain slowly. Only the rises matter.
PRIOR_CURVES: dict[int, dict[int, float]] = {
    1: {4: 0.90, 8: 0.92, 16: 0.93, 32: 0.93, 64: 0.93},
    2: {4: 0.70, 8: 0.76, 16: 0.80, 32: 0.82, 64: 0.82},
    3: {4: 0.50, 8: 0.58, 16: 0.64, 32: 0.67, 64: 0.68},
    4: {4: 0.30, 8: 0.37, 16: 0.43, 32: 0.47, 64: 0.50},
    5: {4: 0.15, 8: 0.20, 16: 0.25, 32: 0.29, 64: 0.32},
}
WAVE = 4  # samples drawn at once by the online passes
SETTLE = 0.02  # a problem whose answer flips with less than this chance over its remaining plan stops early
NEW_ANSWER_WEIGHT = 0.5  # the pseudo-sample of an answer not seen yet (its PRM score): small pools stay open
CAP_FACTOR = 4  # no problem gets more than CAP_FACTOR x the mean per problem (nor more than 256)
MAX_PER_PROBLEM = 256


def curves_of(policy: Policy | None) -> dict[int, dict[int, float]]:
    """Level -> {samples: accuracy} of weighted best-of-N from a calibrated policy's accuracy table; the prior
    curves when the policy has none."""
    if policy is None or not policy.accuracy:
        return PRIOR_CURVES
    out: dict[int, dict[int, float]] = {}
    for level in LEVELS:
        row = policy.accuracy.get(level) or policy.accuracy.get(str(level)) or {}
        pts = {}
        for b, cell in row.items():
            acc = (cell.get("all") or {}).get(CURVE_STRATEGY, cell.get("accuracy"))
            if acc is not None:
                pts[int(b)] = float(acc)
        if not pts:
            return PRIOR_CURVES
        out[level] = pts
    return out


def hull(points: dict[int, float], start: int) -> list[tuple[int, float]]:
    """The upper concave hull of a curve from `start` samples on, as (samples, slope per sample) segments of
    falling slope; the curve's value at `start` is interpolated (flat before its first point)."""
    xs = sorted(points)

    def at(x: float) -> float:
        if x <= xs[0]:
            return points[xs[0]]
        for a, b in zip(xs, xs[1:]):
            if x <= b:
                return points[a] + (points[b] - points[a]) * (x - a) / (b - a)
        return points[xs[-1]]

    pts = [(start, at(start))] + [(x, points[x]) for x in xs if x > start]
    stack: list[tuple[int, float]] = []
    for p in pts:
        while len(stack) >= 2 and _slope(stack[-2], stack[-1]) <= _slope(stack[-1], p):
            stack.pop()
        stack.append(p)
    return [(b[0] - a[0], _slope(a, b)) for a, b in zip(stack, stack[1:]) if _slope(a, b) > 0]


def _slope(a: tuple[int, float], b: tuple[int, float]) -> float:
    return (b[1] - a[1]) / (b[0] - a[0])


def plan(levels: list[int], have: list[int], extra: int, curves: dict[int, dict[int, float]], cap: int) -> list[int]:
    """Targets (samples per problem) that spend `extra` more samples where the curves rise most per sample:
    segments are taken best slope first (ties: the earlier problem), the last one in part. What no curve
    wants (all flat, or at `cap`) goes round-robin to the hardest levels first, up to `cap`."""
    target = list(have)
    heap = []
    segs = {}
    for i, lv in enumerate(levels):
        segs[i] = hull(curves[lv], have[i])
        if segs[i]:
            heapq.heappush(heap, (-segs[i][0][1], i, 0))
    left = extra
    while left > 0 and heap:
        _, i, j = heapq.heappop(heap)
        take = min(segs[i][j][0], left, cap - target[i])
        target[i] += take
        left -= take
        if j + 1 < len(segs[i]) and target[i] < cap:
            heapq.heappush(heap, (-segs[i][j + 1][1], i, j + 1))
    order = sorted(range(len(levels)), key=lambda i: (-levels[i], i))
    while left > 0 and any(target[i] < cap for i in order):
        for i in order:
            if left > 0 and target[i] < cap:
                target[i] += 1
                left -= 1
    return target


def flip_chance(cands: list[Candidate], horizon: int, new_weight: float = NEW_ANSWER_WEIGHT) -> float:
    """The chance that `horizon` more samples change the PRM-weighted vote's winner, by a normal approximation:
    each sample adds its score to its answer, so the lead W1 - W2 over the runner-up moves by a sum of
    `horizon` draws whose mean and variance are those of the pool's (+s for the leader, -s for the runner-up,
    0 otherwise). The runner-up is the best other answer seen, or one not seen yet, counted as one
    pseudo-sample of score `new_weight` (without it four agreeing samples would look settled for ever)."""
    if horizon <= 0:
        return 0.0
    answer, details = select_weighted(cands)
    weights = details["weights"]
    lead = weights.get(answer, 0.0) if answer is not None else 0.0
    others = [(w, a) for a, w in weights.items() if a != answer]
    second = max(others)[1] if others else None
    second_w = weights[second] if second is not None else 0.0
    xs = [(c.score or 0.0) if c.answer == answer and answer is not None else
          -(c.score or 0.0) if c.answer == second and second is not None else 0.0 for c in cands]  # fmt: skip
    if second is None or second_w < new_weight:
        xs.append(-new_weight)  # the unseen answer is the likelier challenger
    n = len(xs)
    mu = sum(xs) / n
    var = max(sum(x * x for x in xs) / n - mu * mu, 1e-4)
    z = (lead - second_w + horizon * mu) / math.sqrt(var * horizon)
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass
class Budget:
    """The total and what is spent of it, in generations or in policy tokens (then a sample is charged its
    real tokens, and a draw must fit `max_tokens` per sample)."""

    total: int
    unit: str = "generations"  # or "tokens"
    max_tokens: int = 1
    spent: int = 0
    samples: int = 0

    def fits(self, k: int) -> int:
        """How many of k samples can be drawn now without any chance of going over the total."""
        per = 1 if self.unit == "generations" else self.max_tokens
        return max(0, min(k, (self.total - self.spent) // per))

    def charge(self, cands: list[Candidate]) -> None:
        self.samples += len(cands)
        self.spent += len(cands) if self.unit == "generations" else sum(c.tokens for c in cands)

    def samples_left(self) -> int:
        """The samples the rest of the total buys, by the running mean of tokens per sample (the planner's
        estimate; `fits` is the guarantee)."""
        if self.unit == "generations":
            return self.total - self.spent
        per = self.spent / self.samples if self.samples else self.max_tokens
        return int((self.total - self.spent) / max(per, 1.0))


@dataclass
class Problem:
    """One problem's part of an allocation."""

    cands: list[Candidate] = field(default_factory=list)
    level: int | None = None
    estimate: float | None = None
    planned: int = 0
    stopped: str = ""  # settled | plan | cap | budget

    def record(self) -> dict:
        return {"samples": len(self.cands), "level": self.level, "planned": self.planned, "stopped": self.stopped,
                "estimate": None if self.estimate is None else round(self.estimate, 6)}  # fmt: skip


Draw = Callable[[int, int, int], list[Candidate]]  # (problem index, first sample, count) -> scored candidates


@dataclass
class Allocator:
    policy: Policy  # the calibrated policy (levels, estimation samples) or the prior
    curves: dict[int, dict[int, float]]
    wave: int = WAVE
    settle: float = SETTLE
    new_weight: float = NEW_ANSWER_WEIGHT

    def run(self, mode: str, n: int, draw: Draw, budget: Budget, cap: int | None = None) -> list[Problem]:
        if mode not in MODES:
            raise ValueError(f"unknown allocation mode {mode!r}")
        cap = cap or max_per_problem(budget.samples_left(), n)
        ps = [Problem() for _ in range(n)]
        take = lambda i, k: self._take(ps, i, k, draw, budget)  # noqa: E731
        if mode == "uniform":
            share = budget.samples_left()
            for i in range(n):
                ps[i].planned = share // n + (i < share % n)
            for i in range(n):
                take(i, ps[i].planned)
            while budget.fits(1) and budget.unit == "tokens":  # what the token mean left over, round-robin
                if not any(take(i, 1) for i in range(n)):
                    break
            return ps
        if mode == "stream":
            for i in range(n):
                self.solve_one(ps, i, n, draw, budget, cap)
            return ps
        first = max(1, min(self.policy.samples, budget.samples_left() // n))  # every problem gets its estimate
        for i in range(n):
            take(i, first)
            self._level(ps[i])
        targets = plan([p.level for p in ps], [len(p.cands) for p in ps], budget.samples_left(), self.curves, cap)
        for p, t in zip(ps, targets):
            p.planned = t
        if mode == "allocator":
            for i in range(n):
                take(i, ps[i].planned - len(ps[i].cands))
            return ps
        for i in range(n):  # online: the plan, with early stops
            while len(ps[i].cands) < ps[i].planned:
                if flip_chance(ps[i].cands, ps[i].planned - len(ps[i].cands), self.new_weight) < self.settle:
                    ps[i].stopped = "settled"
                    break
                if not take(i, min(self.wave, ps[i].planned - len(ps[i].cands))):
                    break
        self.spend_rest(ps, range(n), draw, budget, cap)
        return ps

    def spend_rest(self, ps: list[Problem], ids, draw: Draw, budget: Budget, cap: int) -> None:
        """Waves to the problem whose answer the next samples are likeliest to change, per sample (the chance
        over a horizon as long as its pool: would twice the samples change it?), until nothing fits."""
        heap = [(-self._value(ps[i]), i) for i in ids if len(ps[i].cands) < cap]
        heapq.heapify(heap)
        while heap and budget.fits(1):
            v, i = heapq.heappop(heap)
            if -v * max(self.wave, len(ps[i].cands)) < self.settle:  # nowhere left where more would change it
                break
            if not self._take(ps, i, min(self.wave, cap - len(ps[i].cands)), draw, budget):
                break
            ps[i].stopped = "reallocated"
            if len(ps[i].cands) < cap:
                heapq.heappush(heap, (-self._value(ps[i]), i))

    def solve_one(self, ps: list[Problem], i: int, n: int, draw: Draw, budget: Budget, cap: int) -> None:
        """Problem i of an expected n, seen alone: `plan_one`, then its plan with the early stop."""
        p = ps[i]
        self._take(ps, i, self.policy.samples, draw, budget)
        self._level(p)
        p.planned = plan_one(self, [q.level for q in ps[: i + 1]], len(p.cands), n - i - 1, budget, cap)
        while len(p.cands) < p.planned:
            if flip_chance(p.cands, p.planned - len(p.cands), self.new_weight) < self.settle:
                p.stopped = "settled"
                break
            if not self._take(ps, i, min(self.wave, p.planned - len(p.cands)), draw, budget):
                break

    def _take(self, ps: list[Problem], i: int, k: int, draw: Draw, budget: Budget) -> int:
        k = budget.fits(k)
        if k <= 0:
            if budget.fits(1) == 0:
                ps[i].stopped = ps[i].stopped or "budget"
            return 0
        got = draw(i, len(ps[i].cands), k)
        budget.charge(got)
        ps[i].cands.extend(got)
        return len(got)

    def _level(self, p: Problem) -> None:
        if p.cands:
            mean, agreement = estimate_stats(p.cands[: self.policy.samples])
            p.estimate = self.policy.value(mean, agreement)
            p.level = self.policy.level(p.estimate)
        else:
            p.level = len(LEVELS)

    def _value(self, p: Problem) -> float:
        horizon = max(self.wave, len(p.cands))
        return flip_chance(p.cands, horizon, self.new_weight) / horizon if p.cands else 1.0


def plan_one(alloc: Allocator, seen: list[int], have: int, after: int, budget: Budget, cap: int) -> int:
    """Stream mode's target for the newest problem: the file plan for the problems seen so far plus `after`
    more expected ones, whose levels are assumed to follow the running mix of levels seen (a running
    estimate), with a reserve of the estimation samples of each expected problem; what a problem does not
    spend (an early stop) stays for the ones after it."""
    left = budget.samples_left()
    reserve = alloc.policy.samples * after
    if after == 0:
        return min(cap, have + left)
    mix = [seen.count(lv) / len(seen) for lv in LEVELS]
    # the problems to come, as a level histogram scaled to `after` (rounded, at least the newest's level)
    future = [lv for lv, share in zip(LEVELS, mix) for _ in range(round(share * after))]
    levels = [seen[-1], *future]
    haves = [have] + [alloc.policy.samples] * len(future)
    extra = max(0, left - reserve)
    targets = plan(levels, haves, extra, alloc.curves, cap)
    return min(targets[0], have + extra)


def max_per_problem(samples: int, n: int) -> int:
    """The most one problem may get: CAP_FACTOR x the mean per problem, at most MAX_PER_PROBLEM."""
    return max(1, min(MAX_PER_PROBLEM, CAP_FACTOR * max(1, samples // max(1, n))))


def answer_of(p: Problem) -> str | None:
    return select_weighted(p.cands)[0] if p.cands else None
