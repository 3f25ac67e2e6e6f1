"""What every strategy shares: the context it runs in, the registry, and turning completions and usage
into the common result record.

A strategy is a function `(SolveContext) -> Result`, registered by name with `@strategy(...)`. It spends at
most `ctx.budget` generation-equivalents, and the spend it reports is measured from the engines' usage
counters, never assumed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..answers import extract_answer
from ..engine.base import Completion, Engine, SamplingParams, Usage
from ..errors import UsageError
from ..presets import Preset
from ..prompts import problem_prompt
from ..record import Candidate, Result, Spent
from ..thinking import ThinkSetup
from .trace import token_lists, trace_scores


class PolicyTable(Protocol):
    """What `auto` needs of a compute-optimal policy (ttc.policy.Policy implements it): the strategies layer
    runs a table without importing the layer that loads and calibrates one."""

    samples: int  # difficulty-estimation samples, spent from the budget
    source: str

    def value(self, mean_score: float, agreement: float) -> float: ...

    def level(self, value: float) -> int: ...

    def plan(self, level: int, budget: int) -> tuple[Any, int, int]: ...


@dataclass
class SolveContext:
    problem: str
    preset: Preset
    policy: Engine
    budget: int  # generation-equivalents allowed
    seed: int
    sampling: SamplingParams  # temperature, top_p, top_k, max_tokens, stop (preset < flags)
    prm: Any = None  # a reward model (ttc.prm), None when none is configured
    table: PolicyTable | None = None  # the compute-optimal policy (ttc.policy.Policy) for `auto`, if any
    options: dict[str, Any] = field(default_factory=dict)  # strategy hyperparameters
    progress: Callable[[str], None] | None = None  # status callback for the command line
    notes: list[str] = field(default_factory=list)  # what the strategy adjusted (shown on stderr, kept in details)
    thinking: ThinkSetup | None = None  # a thinking model's block (its control is in `sampling` too)

    def prompt(self) -> str:
        if self.thinking is not None:
            return self.thinking.prompt(self.preset, self.policy, self.problem)
        return problem_prompt(self.preset, self.policy, self.problem)

    @property
    def thinks(self) -> bool:
        """Whether the policy writes a thinking block in this run."""
        return self.thinking is not None and self.thinking.enabled

    def warn(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)


@dataclass(frozen=True)
class StrategySpec:
    name: str
    run: Callable[[SolveContext], Result]
    summary: str
    needs_prm: bool = False  # cannot run without a reward model (self-judge stands in when none is configured)
    uses_prm: bool = False  # uses the preset's reward model when one is configured
    # For strategies whose candidates are independent samples: the result a smaller budget k would have
    # given, computed from the first k candidates of a run at a larger budget (scaling curves from one run).
    subset: Callable[[Result, int], Result] | None = None
    # Whether these options make it run without a reward model (best-of-n with weight=confidence)
    prm_free: Callable[[dict[str, Any]], bool] | None = None
    # Whether `subset` holds for these options (None: always); deepconf's online mode is not independent draws
    subset_when: Callable[[dict[str, Any]], bool] | None = None
    stepwise: bool = False  # works on a solution's steps (search, revision): not over a thinking trace

    def subset_for(self, options: dict[str, Any]) -> Callable[[Result, int], Result] | None:
        """`subset`, where a run with these options has independent candidates; else None."""
        if self.subset is None or (self.subset_when is not None and not self.subset_when(options)):
            return None
        return self.subset

    def wants_prm(self, options: dict[str, Any], configured: bool) -> bool:
        """Whether a run with these options gets a reward model (self-judge stands in where none is
        `configured` and the strategy needs one)."""
        if self.prm_free is not None and self.prm_free(options):
            return False
        return self.needs_prm or (self.uses_prm and configured)


REGISTRY: dict[str, StrategySpec] = {}


def strategy(
    name: str,
    summary: str,
    needs_prm: bool = False,
    uses_prm: bool = False,
    subset: Callable[[Result, int], Result] | None = None,
    prm_free: Callable[[dict[str, Any]], bool] | None = None,
    subset_when: Callable[[dict[str, Any]], bool] | None = None,
    stepwise: bool = False,
):
    def register(fn: Callable[[SolveContext], Result]) -> Callable[[SolveContext], Result]:
        REGISTRY[name] = StrategySpec(
            name, fn, summary, needs_prm, uses_prm or needs_prm, subset, prm_free, subset_when, stepwise
        )
        return fn

    return register


def scale_spent(spent: Spent, result: Result, k: int) -> Spent:
    """The spend of drawing only the first k of a result's independent candidates: generated tokens are
    counted exactly; prompt tokens, PRM tokens, decode calls, time and FLOPs in proportion to them."""
    total = sum(c.tokens for c in result.candidates) or 1
    part = sum(c.tokens for c in result.candidates[:k])
    f = part / total
    return Spent(
        generations=float(k),
        tokens_generated=part,
        prompt_tokens=round(spent.prompt_tokens * f),
        prm_tokens=round(spent.prm_tokens * f),
        decode_calls=round(spent.decode_calls * f),
        wall_s=round(spent.wall_s * f, 4),
        flops=spent.flops * f,
        **thinking_spent(result.candidates[:k]),
    )


def thinking_spent(cands: list[Candidate]) -> dict[str, int]:
    """Spent's thinking counts, summed over the candidates' thinking blocks."""
    blocks = [c.think for c in cands if c.think is not None]
    return {
        "thinking_tokens": sum(b["tokens"] for b in blocks),
        "answer_tokens": sum(b["answer_tokens"] for b in blocks),
        "forced_tokens": sum(b["forced_tokens"] for b in blocks),
        "forced_cuts": sum(bool(b["cut"]) for b in blocks),
        "forced_continuations": sum(b["continuations"] for b in blocks),
    }


def parse_variant(label: str) -> tuple[str, dict[str, Any]]:
    """'beam:width=2:select=best' -> ('beam', {'width': 2, 'select': 'best'}): a strategy with options,
    named as one label (for bench and calibration, where variants sit side by side)."""
    name, *pairs = label.split(":")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"strategy variant '{label}': options are key=value after ':' (e.g. beam:width=2)")
        options[key] = as_number(value)
    return name, options


def as_number(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value


def get_strategy(name: str) -> StrategySpec:
    name = parse_variant(name)[0]
    if name not in REGISTRY:
        from difflib import get_close_matches

        close = get_close_matches(name, list(REGISTRY), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown strategy '{name}' (known: {', '.join(REGISTRY)}){hint}")
    return REGISTRY[name]


class Meter:
    """Measures what a strategy spends on the policy and on the reward model (whose usage is its own, also
    when it runs on the policy's engine, as self-judging does)."""

    def __init__(self, ctx: SolveContext):
        self.ctx = ctx
        self.policy0 = ctx.policy.usage.snapshot()
        self.prm0 = ctx.prm.usage.snapshot() if ctx.prm is not None else Usage()

    def _usage(self) -> tuple[Usage, Usage]:
        pol = self.ctx.policy.usage - self.policy0
        prm = (self.ctx.prm.usage - self.prm0) if self.ctx.prm is not None else Usage()
        if self.ctx.prm is not None and self.ctx.prm.engine is self.ctx.policy:
            pol = pol - prm  # self-judging: take the PRM's share out of the policy's counts
        return pol, prm

    def generated(self) -> int:
        """Policy tokens generated so far."""
        return self._usage()[0].generated_tokens

    def spent(self, generations: float) -> Spent:
        pol, prm = self._usage()
        n_pol = self.ctx.policy.info.n_params
        n_prm = self.ctx.prm.engine.info.n_params if self.ctx.prm is not None else 0
        return Spent(
            generations=round(float(generations), 3),
            tokens_generated=pol.generated_tokens,
            prompt_tokens=pol.prompt_tokens,
            prm_tokens=prm.prompt_tokens,
            decode_calls=pol.decode_calls + prm.decode_calls,
            wall_s=round(pol.wall_s + prm.wall_s, 4),
            flops=float(2 * n_pol * (pol.prompt_tokens + pol.generated_tokens) + 2 * n_prm * prm.prompt_tokens),
        )


def split_steps(text: str, delimiter: str) -> list[str]:
    """A solution's steps: the text split at the delimiter, each step keeping its delimiter, none empty."""
    if not delimiter:
        return [text] if text else []
    parts = text.split(delimiter)
    steps = [p + delimiter for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    return [s for s in steps if s.strip()]


def candidate(ctx: SolveContext, c: Completion, window: int | None = None) -> Candidate:
    """The record of one completion; with token statistics, its trace scores (group scores over `window`
    tokens, default: trace.window_for) and, with the option per_token=1, the per-token values."""
    text, answer = c.text, None
    t = c.thinking
    if t is not None:  # the answer part alone; a block that never closed has no answer
        text = t.answer if t.answer is not None else ""
    if t is None or t.answer is not None:
        answer = extract_answer(text, ctx.preset.answer.format, ctx.preset.answer.last_number_fallback)
    cand = Candidate(
        answer=answer,
        text=text,
        steps=split_steps(text, ctx.preset.step_delimiter),
        tokens=c.n_generated,
        finish_reason=c.finish_reason,
    )
    if t is not None:
        cand.thinking = t.thinking
        cand.think = {
            "tokens": t.n_thinking, "answer_tokens": t.n_answer, "forced_tokens": t.n_forced, "cut": t.cut,
            "continuations": t.continuations, "closed": t.answer is not None,
        }  # fmt: skip
    if c.stats is not None:
        cand.trace_scores = trace_scores(c.stats, window)
        if str(ctx.options.get("per_token", 0)).lower() in ("1", "true", "yes", "on"):
            cand.token_stats = token_lists(c.stats)
    return cand


def make_result(
    ctx: SolveContext,
    name: str,
    meter: Meter,
    candidates: list[Candidate],
    answer: str | None,
    generations: float,
    details: dict[str, Any] | None = None,
) -> Result:
    spent = meter.spent(generations)
    if ctx.thinking is not None:
        spent = dataclasses.replace(spent, **thinking_spent(candidates))
    config_thinking = {"thinking": ctx.thinking.describe()} if ctx.thinking is not None else {}
    return Result(
        answer=answer,
        strategy=name,
        budget=ctx.budget,
        problem=ctx.problem,
        candidates=candidates,
        spent=spent,
        model=ctx.policy.info.name,
        prm=None if ctx.prm is None else ctx.prm.engine.info.name,
        seed=ctx.seed,
        details={**(details or {}), **({"notes": list(ctx.notes)} if ctx.notes else {})},
        config={
            "preset": ctx.preset.name,
            "sampling": {
                "temperature": ctx.sampling.temperature,
                "top_p": ctx.sampling.top_p,
                "top_k": ctx.sampling.top_k,
                "max_tokens": ctx.sampling.max_tokens,
            },
            "options": dict(ctx.options),
            **config_thinking,
        },
    )


def choice_option(ctx: SolveContext, key: str, choices: tuple[str, ...], default: str) -> str:
    """Option `key` (--opt key=VALUE), one of `choices`."""
    value = str(ctx.options.get(key, default))
    if value not in choices:
        raise UsageError(f"--opt {key} must be one of {', '.join(choices)}, got '{value}'")
    return value


def number_option(
    ctx: SolveContext, key: str, default: float, low: float, high: float | None = None, *,
    open_low: bool = False, open_high: bool = False, integer: bool = False,
) -> float:  # fmt: skip
    """Option `key`, a number within [low, high] (either end open when asked; no high: unbounded), an integer
    when `integer`; anything else is a usage error naming the range."""
    value = ctx.options.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = (value > low if open_low else value >= low) and (
            high is None or (value < high if open_high else value <= high)
        )
    if not ok:
        kind = "an integer" if integer else "a number"
        if high is None:
            where = f"{'above' if open_low else 'at least'} {low:g}"
        else:
            where = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise UsageError(f"--opt {key} must be {kind} {where}, got '{value}'")
    return int(value) if integer else float(value)
