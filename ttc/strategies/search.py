"""Step-wise search against a process reward model: beam search, lookahead, DVTS and particle filtering.

All of them grow branches one step at a time on the engine's `BranchSet` (a step ends at the preset's
step delimiter), score each new step incrementally on the PRM's own branches (`StepScorer`), and decide
which branches live on. Forks share KV cache, so every step's tokens are evaluated once on the policy and
once on the PRM. Finished branches (end of generation, or out of tokens) become candidates; the answer is
chosen among them by weighted vote of their aggregated scores (`select`, option: weighted | best | majority).

Spend is counted, not assumed: generation-equivalents = policy tokens generated / mean tokens of a
finished solution. Two rules keep every search within its budget on every problem, not just on average:

- Slots. A search starts with K branches (K = the budget, or fewer where lookahead's rollouts need room)
  and each branch that finishes takes its slot with it: the live set shrinks, it is never refilled. So the
  search ends with exactly K candidates, and every step it generated is a step of some candidate or of a
  branch it pruned.
- Commits. Pruning long branches and forking short ones could still make the tokens generated exceed K
  candidates' worth. Before a selection is carried out, `Search.commit` checks the credit
  (budget / K) x (tokens of all K slots' branches) - (policy tokens generated so far), which stepping never
  lowers; where the selection would leave it negative, the fewest of its extra copies are swapped back for
  the longest branches it pruned until the credit is not. Lookahead's rollouts are paid from that credit.
  With credit >= 0 at the end, generations = tokens / (candidates' tokens / K) <= the budget.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from ..answers import extract_answer
from ..engine.base import SamplingParams
from ..errors import UsageError
from ..record import Candidate, Result
from .base import Meter, SolveContext, make_result, split_steps, strategy
from .sampling import select_best, select_majority, select_weighted

SELECTORS = {"weighted": select_weighted, "best": select_best, "majority": select_majority}


@dataclass
class Beam:
    pid: int  # policy branch id
    sid: int  # PRM branch id
    group: int = 0  # subtree (DVTS)
    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    tokens: int = 0
    done: str = ""  # finish reason once finished

    def copy(self, pid: int, sid: int) -> Beam:
        return Beam(pid, sid, self.group, list(self.steps), list(self.scores), self.tokens, self.done)


def width_for(ctx: SolveContext, default: int = 4) -> tuple[int, int]:
    """(budget, width) after checking: a budget below the width is an error; a width that does not divide
    the budget rounds the budget down to a multiple, said on stderr."""
    width = int(ctx.options.get("width", default))
    if width < 1:
        raise UsageError(f"beam width must be at least 1, got {width}")
    n = ctx.budget
    if n < width:
        raise UsageError(f"--budget {n} is below the beam width {width}; raise the budget or lower the width")
    if n % width:
        rounded = n - n % width
        ctx.warn(f"budget {n} is not a multiple of the beam width {width}; using {rounded}")
        n = rounded
    return n, width


class Search:
    """Policy branches and PRM branches kept in step, and the budget they are spent from."""

    def __init__(self, ctx: SolveContext, meter: Meter, n_live: int, slots: int):
        if ctx.prm is None:
            raise UsageError("this strategy needs a reward model: configure prm in the preset")
        self.ctx, self.meter = ctx, meter
        self.max_tokens = ctx.sampling.max_tokens
        self.policy = ctx.policy.branches(ctx.prompt(), max_live=n_live, max_tokens=self.max_tokens)
        self.prm = ctx.prm.scorer(ctx.problem, max_live=n_live, max_tokens=self.max_tokens)
        self.delim = ctx.preset.step_delimiter
        self.step_seed = 0
        self.allowance = ctx.budget / slots  # generation-equivalents per slot (`slots`: candidates it ends with)
        self.done_tokens = 0  # tokens of the finished branches
        self.swaps = 0  # selections' copies swapped back for pruned branches (see `commit`)

    def credit(self, live: list[Beam], tokens: float | None = None) -> float:
        """Tokens the search may still generate beyond its slots' own: allowance x (tokens of finished and
        live branches, or `tokens` for a proposed live set) - policy tokens generated so far."""
        held = sum(b.tokens for b in live) if tokens is None else tokens
        return self.allowance * (self.done_tokens + held) - self.meter.generated()

    def start(self, k: int, groups: int = 1) -> list[Beam]:
        pids, sids = self.policy.fork(0, k), self.prm.fork(0, k)
        self.policy.drop([0])
        self.prm.drop([0])
        return [Beam(p, s, group=i * groups // k) for i, (p, s) in enumerate(zip(pids, sids))]

    def fork(self, beam: Beam, k: int) -> list[Beam]:
        """k copies of a beam; the beam itself is the first (no extra sequence for it)."""
        if k <= 1:
            return [beam]
        pids, sids = self.policy.fork(beam.pid, k - 1), self.prm.fork(beam.sid, k - 1)
        return [beam] + [beam.copy(p, s) for p, s in zip(pids, sids)]

    def commit(self, live: list[Beam], counts: list[int]) -> list[Beam]:
        """Carry out a selection: beam i of `live` goes on as `counts[i]` copies (0: pruned). The copies
        add up to len(live), so the slots stay as they are. Where the selection would leave the credit
        negative (it keeps shorter branches than it prunes), the extra copies of the shortest branches are
        swapped back for the longest pruned ones until it does not; keeping every branch once restores the
        credit from before the selection, so this always ends."""
        counts = list(counts)
        assert sum(counts) == len(live), "a selection keeps the number of live branches"
        credit = self.credit(live, sum(k * b.tokens for b, k in zip(live, counts)))
        if credit < 0:
            pruned = sorted((i for i, k in enumerate(counts) if k == 0), key=lambda i: -live[i].tokens)
            extras = sorted((i for i, k in enumerate(counts) for _ in range(k - 1)), key=lambda i: live[i].tokens)
            for p, e in zip(pruned, extras):
                gain = live[p].tokens - live[e].tokens
                if credit >= 0 or gain <= 0:
                    break
                counts[p], counts[e] = 1, counts[e] - 1
                credit += self.allowance * gain
                self.swaps += 1
        self.drop([b for b, k in zip(live, counts) if k == 0])
        return [c for b, k in zip(live, counts) if k for c in self.fork(b, k)]

    def rounds(self, live: list[Beam], choose) -> list[Beam]:
        """Step all live beams, set finished ones aside, let `choose` say how many copies of each live beam
        go on (`commit` carries it out); repeat until none is live or `max_steps` (option, default 40)
        rounds. Returns every finished beam, one per slot."""
        finished: list[Beam] = []
        for _ in range(int(self.ctx.options.get("max_steps", 40))):
            if not live:
                break
            self.step(live)
            live = self.retire(live, finished)
            if live:
                live = self.commit(live, choose(live))
        for b in live:
            b.done = b.done or "length"
        return finished + live

    def retire(self, beams: list[Beam], finished: list[Beam]) -> list[Beam]:
        """Move finished beams to `finished`, freeing their sequences; return the live ones."""
        done = [b for b in beams if b.done]
        finished += done
        self.done_tokens += sum(b.tokens for b in done)
        self.drop(done)
        return [b for b in beams if not b.done]

    def drop(self, beams: list[Beam]) -> None:
        if beams:
            self.policy.drop([b.pid for b in beams])
            self.prm.drop([b.sid for b in beams])

    def step(self, beams: list[Beam], temperature: float | None = None, cap: int | None = None) -> None:
        """Extend each beam by one step (at most `cap` tokens each) and score it; mark beams that finished.

        The beams are stepped in one batch, whose token limit is the smallest room any of them has left;
        a beam cut by that limit while it still has room of its own goes on with its step in a further
        batch, so a beam near `max_tokens` never truncates the others' steps."""
        if not beams:
            return
        limit = [self.max_tokens - b.tokens if cap is None else min(self.max_tokens - b.tokens, cap) for b in beams]
        text = [""] * len(beams)
        made = [0] * len(beams)
        reason = ["length"] * len(beams)
        pending = list(range(len(beams)))
        while pending:
            params = SamplingParams(
                temperature=self.ctx.sampling.temperature if temperature is None else temperature,
                top_p=self.ctx.sampling.top_p,
                top_k=self.ctx.sampling.top_k,
                max_tokens=max(1, min(limit[i] - made[i] for i in pending)),
                stop=(self.delim,) if self.delim else (),
                include_stop=True,
                seed=self.ctx.seed * 1_000_003 + self.step_seed,
            )
            self.step_seed += 1
            comps = self.policy.extend([beams[i].pid for i in pending], params)
            for i, c in zip(pending, comps):
                text[i] += c.text
                made[i] += c.n_generated
                reason[i] = c.finish_reason
            pending = [
                i for i in pending if reason[i] == "length" and made[i] < limit[i] and not text[i].endswith(self.delim)
            ]
        stopped = [self.cut_at_stop(b, i, text) for i, b in enumerate(beams)]
        scores = self.prm.add_steps([b.sid for b in beams], [t if t else " " for t in text])
        for b, t, n, why, s, hit in zip(beams, text, made, reason, scores, stopped):
            b.tokens += n
            if hit:  # the preset's stop string ended the solution: its step is kept only if it has text
                if t.strip():
                    b.steps.append(t)
                    b.scores.append(s)
                b.done = "stop"
                continue
            b.steps.append(t)
            b.scores.append(s)
            if why == "eos":
                b.done = "eos"
            elif b.tokens >= self.max_tokens:
                b.done = "length"
            elif why == "length" and not t.endswith(self.delim):
                b.done = "length"

    def cut_at_stop(self, b: Beam, i: int, text: list[str]) -> bool:
        """Cut `text[i]`, beam b's new step, at the earliest of the preset's stop strings (whole-solution stops
        such as a base model's next "Problem:", which can span steps); True when one was found. A stop that
        began in earlier steps leaves this step empty (earlier steps were already scored as they are)."""
        stops = [x for x in self.ctx.sampling.stop if x]
        if not stops:
            return False
        prev = "".join(b.steps)
        full = prev + text[i]
        start = max(0, len(prev) - max(len(x) for x in stops) + 1)
        hits = [k for k in (full.find(x, start) for x in stops) if k >= 0]
        if not hits:
            return False
        k = min(hits)
        text[i] = full[len(prev) : k] if k > len(prev) else ""
        return True

    def candidate(self, b: Beam) -> Candidate:
        text = "".join(b.steps)
        return Candidate(
            answer=extract_answer(text, self.ctx.preset.answer.format, self.ctx.preset.answer.last_number_fallback),
            text=text,
            steps=split_steps(text, self.delim),
            scores=[round(x, 6) for x in b.scores],
            score=round(self.ctx.prm.aggregate(b.scores), 6),
            tokens=b.tokens,
            finish_reason=b.done or "length",
        )

    def close(self) -> None:
        self.policy.close()
        self.prm.close()


def _finish(ctx: SolveContext, name: str, meter: Meter, search: Search, finished: list[Beam], details: dict) -> Result:
    cands = [search.candidate(b) for b in finished]
    select = SELECTORS.get(str(ctx.options.get("select", "weighted")))
    if select is None:
        raise UsageError(f"unknown selection '{ctx.options.get('select')}' (known: {', '.join(SELECTORS)})")
    answer, sel = select(cands)
    details.update(sel)
    details["budget_swaps"] = search.swaps
    solution_tokens = sum(c.tokens for c in cands) / max(1, len(cands))
    generations = meter.generated() / max(1.0, solution_tokens)
    return make_result(ctx, name, meter, cands, answer, generations=generations, details=details)


def keep_best(members: list[Beam], values: dict[int, float], width: int) -> list[int]:
    """Copies of each member (in order) for a group of live beams: the best ceil(len / width) by value go
    on `width` times each, the last of them only as often as the group's slots allow."""
    order = sorted(range(len(members)), key=lambda i: -values[id(members[i])])
    counts = [0] * len(members)
    left = len(members)
    for i in order:
        if left <= 0:
            break
        counts[i] = min(width, left)
        left -= counts[i]
    return counts


def tree_search(ctx: SolveContext, name: str, groups: int, keep_per_group: int, width: int, lookahead: int = 0):
    """Beam search (one group, keep N/M) and DVTS (N/M groups, keep 1 each): every round, extend all live
    beams one step, move finished ones aside, keep the best of each group by last-step score (after
    `lookahead` greedy steps when asked) and expand each kept beam `width` times. A group's live beams
    are as many as its slots not yet finished: keep_per_group x width at first, one fewer for each beam of
    it that finished."""
    meter = Meter(ctx)
    n = groups * keep_per_group * width
    search = Search(ctx, meter, n_live=(2 * n if lookahead else n) + 1, slots=n)  # lookahead rolls out copies

    def choose(live: list[Beam]) -> list[int]:
        values = _lookahead_values(search, live, lookahead) if lookahead else {id(b): b.scores[-1] for b in live}
        counts = [0] * len(live)
        for g in range(groups):
            idx = [i for i, b in enumerate(live) if b.group == g]
            for i, k in zip(idx, keep_best([live[i] for i in idx], values, width)):
                counts[i] = k
        return counts

    try:
        finished = search.rounds(search.start(n, groups), choose)
        details = {"width": width, "groups": groups, "kept_per_group": keep_per_group, "lookahead": lookahead}
        return _finish(ctx, name, meter, search, finished, details)
    finally:
        search.close()


def _lookahead_values(search: Search, live: list[Beam], k: int) -> dict[int, float]:
    """Score each beam by rolling a copy forward k steps at temperature 0 and reading the last step's
    score (the rollouts are real generation and count against the budget); copies are then dropped. A
    rollout step is cut to what the search's credit can pay for, and where it cannot pay for one token
    per copy the rollouts stop there."""
    copies = []
    for b in live:
        copy = search.fork(b, 2)[1]
        copies.append((b, copy))
    rolling = [c for _, c in copies]
    for _ in range(k):
        active = [c for c in rolling if not c.done]
        cap = int(search.credit(live) // max(1, len(active)))
        if not active or cap < 1:
            break
        search.step(active, temperature=0.0, cap=cap)
    values = {id(b): c.scores[-1] for b, c in copies}
    search.drop([c for _, c in copies])
    return values


@strategy(
    "beam", "step-level beam search: N beams, keep N/M by PRM score, expand each M times", needs_prm=True, stepwise=True
)
def beam(ctx: SolveContext) -> Result:
    n, width = width_for(ctx)
    return tree_search(ctx, "beam", groups=1, keep_per_group=n // width, width=width)


@strategy(
    "lookahead", "beam search scoring each step after k greedy rollouts (default k=2)", needs_prm=True, stepwise=True
)
def lookahead(ctx: SolveContext) -> Result:
    n, width = width_for(ctx)
    k = int(ctx.options.get("lookahead", 2))
    if k < 1:
        raise UsageError(f"lookahead k must be at least 1, got {k}")
    # Every live beam is rolled out k more steps each round, so a round costs live x (k + 1) steps; the paper
    # counts the rollouts in the budget, so the number of beams is cut to leave room for them, and where not
    # even one kept beam of this width fits, the width shrinks (said on stderr).
    if n < k + 1:
        raise UsageError(f"--budget {n} is below what lookahead k={k} needs ({k + 1}: each beam is rolled out k steps)")
    kept = (n // width) // (k + 1)
    if kept == 0:
        narrower = n // (k + 1)
        ctx.warn(f"lookahead k={k} with width {width} needs budget {width * (k + 1)}; using width {narrower}")
        width, kept = narrower, 1
    return tree_search(ctx, "lookahead", groups=1, keep_per_group=kept, width=width, lookahead=k)


@strategy(
    "dvts",
    "diverse verifier tree search: N/M independent subtrees, each greedy on the PRM",
    needs_prm=True,
    stepwise=True,
)
def dvts(ctx: SolveContext) -> Result:
    n, width = width_for(ctx)
    return tree_search(ctx, "dvts", groups=n // width, keep_per_group=1, width=width)


@strategy("particle-filter", "N particles resampled each step by PRM-derived weights", needs_prm=True, stepwise=True)
def particle_filter(ctx: SolveContext) -> Result:
    """Sequential Monte Carlo over steps: each step, extend every live particle, weight it by its new step's
    score turned into a likelihood (softmax of logit(score) / temperature, option `pf_temperature`, default
    1), and resample the live particles with replacement (systematic resampling). Finished particles are set
    aside (each takes its slot with it); the answer is chosen among them as in the other searches."""
    meter = Meter(ctx)
    n = ctx.budget
    temp = float(ctx.options.get("pf_temperature", 1.0))
    rng = random.Random(ctx.seed)
    search = Search(ctx, meter, n_live=n + 1, slots=n)

    def resample(live: list[Beam]) -> list[int]:
        logits = [_logit(b.scores[-1]) / temp for b in live]
        m = max(logits)
        picks = _systematic([math.exp(x - m) for x in logits], len(live), rng)
        return [picks.count(i) for i in range(len(live))]

    try:
        finished = search.rounds(search.start(n), resample)
        return _finish(ctx, "particle-filter", meter, search, finished, {"particles": n, "pf_temperature": temp})
    finally:
        search.close()


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _systematic(weights: list[float], n: int, rng: random.Random) -> list[int]:
    """Systematic resampling: n indices drawn in proportion to weights with one uniform offset."""
    total = sum(weights)
    step = total / n
    u = rng.random() * step
    out, acc, i = [], weights[0], 0
    for k in range(n):
        target = u + k * step
        while acc < target and i < len(weights) - 1:
            i += 1
            acc += weights[i]
        out.append(i)
    return out
