"""Solving problems: load the preset's models once, then run a strategy per problem.

This is the one function the command line calls for `ttc solve` (and later `compare` and `bench`); it
holds the precedence defaults < preset < flags and every check on the user's input that is not a
question of syntax.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine.base import Engine, SamplingParams
from .engine.models import resolve_model
from .errors import UsageError
from .presets import Preset, load_preset
from .record import Result
from .strategies import SolveContext, get_strategy


@dataclass
class ModelOptions:
    """Flags that choose and place models."""

    preset: str | None = None  # name or YAML path; None = the default preset
    model: str | None = None  # overrides the preset's model
    n_gpu_layers: int | None = None  # None = all layers when the build has a GPU
    threads: int | None = None  # None = physical cores
    verbose: bool = False  # llama.cpp's own logging


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
        if params.temperature < 0:
            raise UsageError(f"--temperature must be >= 0, got {params.temperature}")
        if not 0 < params.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {params.top_p}")
        if params.max_tokens < 1:
            raise UsageError(f"--max-tokens must be at least 1, got {params.max_tokens}")
        return params


class Solver:
    """A preset with its models loaded, ready to solve many problems."""

    def __init__(self, models: ModelOptions):
        self.preset = load_preset(models.preset)
        self.models = models
        self._policy: Engine | None = None

    @property
    def policy(self) -> Engine:
        if self._policy is None:
            from .engine.llama import LlamaEngine

            ref = self.models.model or self.preset.model
            base = Path(self.preset.source).parent if self.preset.source else None
            path = resolve_model(ref, base_dir=base)
            self._policy = LlamaEngine(
                str(path), n_gpu_layers=self.models.n_gpu_layers, n_threads=self.models.threads,
                verbose=self.models.verbose,
            )  # fmt: skip
        return self._policy

    def solve(
        self,
        problem: str,
        strategy: str,
        budget: int,
        seed: int = 0,
        sampling: SamplingOverrides | None = None,
        options: dict[str, Any] | None = None,
        progress=None,
    ) -> Result:
        spec = get_strategy(strategy)
        check_problem(problem)
        check_budget(budget)
        params = (sampling or SamplingOverrides()).apply(self.preset)
        ctx = SolveContext(
            problem=problem.strip(),
            preset=self.preset,
            policy=self.policy,
            budget=budget,
            seed=seed,
            sampling=dataclasses.replace(params, seed=seed),
            options=dict(options or {}),
            progress=progress,
        )
        return spec.run(ctx)

    def close(self) -> None:
        if self._policy is not None:
            self._policy.close()


def check_problem(problem: str) -> None:
    if not problem or not problem.strip():
        raise UsageError("the problem is empty: pass it as an argument, or one per line on stdin")


def check_budget(budget: int) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UsageError(f"--budget must be a positive integer (generation-equivalents), got {budget!r}")
