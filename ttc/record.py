"""The result record: one definition serves `ttc solve --json`, `ttc compare` and each line of a bench's
samples file.

    Result
      answer       the chosen final answer (None when no candidate had one)
      strategy     registry name (greedy, majority, ...)
      budget       generation-equivalents allowed (the paper's N)
      problem      the problem text
      candidates   every candidate solution considered: answer, text, steps, per-step scores, score, tokens,
                   trace scores (confidence strategies), per-token statistics (only when asked)
      spent        what was really spent (see Spent)
      model / prm  model file names; prm is None without a reward model
      seed         the run's seed
      details      strategy-specific facts (votes per answer, beam width, stop reason, ...)
      config       the settings that reproduce it (preset, sampling, strategy options)
      ttc_version
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from . import __version__


@dataclass
class Candidate:
    answer: str | None  # extracted final answer
    text: str  # the whole solution text
    steps: list[str] = field(default_factory=list)  # the solution split at the step delimiter
    scores: list[float] = field(default_factory=list)  # per-step reward scores (empty without a PRM)
    score: float | None = None  # aggregated score used for selection
    tokens: int = 0  # tokens generated for it
    finish_reason: str = ""  # stop | eos | length | killed (stopped mid-generation by a confidence watch)
    # scores of the trace from its token statistics (strategies.trace.SCORES, and the "window" they used);
    # empty unless the strategy sampled with statistics (deepconf, self-certainty, weight=confidence)
    trace_scores: dict[str, float] = field(default_factory=dict)
    # the per-token confidence / logprob / certainty lists, only when asked for (--opt per_token=1)
    token_stats: dict[str, list[float]] | None = None
    # thinking models: `text` is the answer part alone; the thinking block's text and what it cost
    thinking: str | None = None
    # {"tokens": thinking tokens, "answer_tokens", "forced_tokens", "cut": the think budget ended it,
    #  "continuations": early ends replaced by the continuation word, "closed": the block ended (else no answer)}
    think: dict[str, Any] | None = None


@dataclass
class Spent:
    generations: float = 0.0  # generation-equivalents: full solutions' worth of policy compute
    tokens_generated: int = 0  # policy tokens sampled
    prompt_tokens: int = 0  # policy input tokens evaluated
    prm_tokens: int = 0  # reward-model tokens evaluated
    decode_calls: int = 0  # llama_decode calls or requests, policy and PRM together
    wall_s: float = 0.0
    flops: float = 0.0  # 2 x parameters x tokens, policy and PRM together
    # thinking models (zero otherwise), summed over the candidates: thinking and answer tokens apart (both
    # in tokens_generated), tokens ttc forced (budget messages, end markers, continuation words: counted in
    # prompt_tokens and so in flops), traces cut at the think budget, continuation words forced
    thinking_tokens: int = 0
    answer_tokens: int = 0
    forced_tokens: int = 0
    forced_cuts: int = 0
    forced_continuations: int = 0


@dataclass
class Result:
    answer: str | None
    strategy: str
    budget: int
    problem: str
    candidates: list[Candidate]
    spent: Spent
    model: str
    prm: str | None
    seed: int
    details: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    ttc_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        d = dict(d)
        d["candidates"] = [Candidate(**c) for c in d.get("candidates", [])]
        d["spent"] = Spent(**d.get("spent", {}))
        return cls(**d)
