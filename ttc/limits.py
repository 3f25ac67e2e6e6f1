"""The checks on what a user asks for that no parser makes: a problem that is there, a budget within bounds,
sampling flags in range (SamplingOverrides, applied over a preset). Every entry point (the commands, the
server) calls these before any model runs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .engine.base import SamplingParams
from .errors import UsageError
from .presets import Preset


def check_problem(problem: str) -> None:
    if not problem or not problem.strip():
        raise UsageError("the problem is empty: pass it as an argument, or one per line on stdin")


MAX_BUDGET = 65_536  # generation-equivalents; TTC_MAX_BUDGET raises it


def max_budget() -> int:
    """The largest budget ttc accepts: MAX_BUDGET, or TTC_MAX_BUDGET when set to a positive integer."""
    import os

    raw = os.environ.get("TTC_MAX_BUDGET", "").strip()
    if not raw:
        return MAX_BUDGET
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"TTC_MAX_BUDGET must be a positive integer, got {raw!r}")
    return int(raw)


def check_budget(budget: int, flag: str = "--budget") -> None:
    """A budget is a positive integer no larger than max_budget(): a run far past it would not finish, so it
    is refused up front rather than left running until it is killed."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UsageError(f"{flag} must be a positive integer (generation-equivalents), got {budget!r}")
    limit = max_budget()
    if budget > limit:
        raise UsageError(
            f"{flag} {budget} is over the limit of {limit} generation-equivalents (about {limit} full solutions); "
            f"set TTC_MAX_BUDGET={budget} to allow it"
        )


@dataclass
class SamplingOverrides:
    """Sampling flags; None keeps the preset's value."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None

    def apply(self, preset: Preset) -> SamplingParams:
        s = preset.sampling
        params = SamplingParams(
            temperature=s.temperature if self.temperature is None else self.temperature,
            top_p=s.top_p if self.top_p is None else self.top_p,
            top_k=s.top_k if self.top_k is None else self.top_k,
            max_tokens=s.max_tokens if self.max_tokens is None else self.max_tokens,
            stop=tuple(preset.stop),
        )
        for flag, value in (("--temperature", params.temperature), ("--top-p", params.top_p)):
            if not math.isfinite(value):
                raise UsageError(f"{flag} must be a finite number, got {value}")
        if params.temperature < 0:
            raise UsageError(f"--temperature must be >= 0, got {params.temperature}")
        if not 0 < params.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {params.top_p}")
        if params.max_tokens < 1:
            raise UsageError(f"--max-tokens must be at least 1, got {params.max_tokens}")
        return params
