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
from .limits import MAX_BUDGET, SamplingOverrides, check_budget, check_problem, max_budget  # noqa: F401 - were here
from .presets import HEAD_PRM_FORMATS, PRM_FORMATS, Preset, load_preset
from .record import Result
from .strategies import SolveContext, get_strategy
from .strategies.base import parse_variant
from .thinking import ThinkOptions, ThinkSetup, ThinkSpec, detect, fit_max_tokens, note, setup


@dataclass
class ModelOptions:
    """Flags that choose and place models."""

    preset: str | None = None  # name or YAML path; None = the default preset
    model: str | None = None  # overrides the preset's model
    n_gpu_layers: int | None = None  # None = all layers when the build has a GPU
    threads: int | None = None  # None = physical cores
    verbose: bool = False  # llama.cpp's own logging
    backend: str | None = None  # llama | openai; None = the preset's backend section, else llama
    base_url: str | None = None  # the OpenAI-compatible server (backend openai); None = the preset's
    served_model: str | None = None  # the policy's name on that server; None = the preset's, else its only model
    prm_base_url: str | None = None  # the PRM's server; None = the preset's, else the policy's ("in-process": here)
    flash_attn: str | None = None  # auto | on | off for llama.cpp; None = TTC_FLASH_ATTN, else auto


class Solver:
    """A preset with its models loaded, ready to solve many problems."""

    def __init__(self, models: ModelOptions):
        self.preset = load_preset(models.preset)
        self.models = models
        self._policy: Engine | None = None
        self._prm = None
        self._table = None
        self._prior = None
        self._think_spec: ThinkSpec | None | bool = False  # False: not detected yet
        self._think_setups: dict[tuple, ThinkSetup | None] = {}
        self._think_noted = False
        self.base_dir = Path(self.preset.source).parent if self.preset.source else None
        if models.preset is None and models.model and not _is_builtin(models.model, self.preset, self.base_dir):
            self._fit_preset_to_model()
        from .engine.openai.setup import prm_base_url

        prm_base_url(self.models, self.preset)  # a malformed --prm-base-url fails before anything runs
        self._check_head_prm_placement()

    def _fit_preset_to_model(self) -> None:
        """`--model X` without `--preset`: the built-in pair's prompt, PRM and policy were made for the
        built-in policy, so choose by what the model says of itself (its chat template), once, on stderr."""
        engine = self._policy = self._load(self.models.model)
        chat = bool(engine.info.chat_template)
        name = CHAT_PRESET if chat else BASE_PRESET
        self.preset = load_preset(name)
        self.base_dir = Path(self.preset.source).parent if self.preset.source else None
        why = "has a chat template" if chat else "has no chat template (a base model)"
        self.note(
            f"{engine.info.name} {why}: using preset '{name}' ({self.preset.description.split(', ', 1)[-1]}); "
            "--preset NAME chooses another (ttc presets list)"
        )

    def _check_head_prm_placement(self) -> None:
        """A value-head PRM reads hidden states, which no endpoint ttc speaks returns, and vLLM, whose pooling
        API serves classifier-head PRMs (ttc.prm.pooled), has no value-head architecture: refuse it on a server
        before any model is loaded or any server is asked."""
        cfg = self.preset.prm
        if cfg is None or cfg.format != "value-head":
            return
        from .engine.openai.setup import remote_spec

        if remote_spec(self.models, self.preset, "prm", cfg.model) is not None:
            where = self.preset.source or self.preset.name
            raise UsageError(
                f"{where}: prm.format value-head reads hidden states, which no server ttc speaks returns (vLLM's "
                "/pooling serves classifier heads, Qwen2ForProcessRewardModel, not Skywork's Qwen2ForPrmModel); "
                "run the PRM in-process (backend.prm_base_url: in-process)"
            )

    @property
    def policy(self) -> Engine:
        if self._policy is None:
            self._policy = self._load(self.models.model or self.preset.model)
        return self._policy

    def _load(self, ref: str, role: str = "policy") -> Engine:
        from .engine.openai.setup import IN_PROCESS, PRMNotServed, local_copy, prm_base_url

        try:
            return load_engine(self.models, self.preset, ref, self.base_dir, role)
        except PRMNotServed as e:
            # The PRM was placed nowhere and the policy's server does not list it: a built-in or local file
            # runs here, as a user who passed only --base-url expects; a named place that lacks it is an error.
            if role != "prm" or prm_base_url(self.models, self.preset) is not None:
                raise
            if local_copy(ref, self.base_dir) is None:
                raise
            self.note(
                f"{str(e).split(' serves ', 1)[0]} does not list the PRM '{ref}': running it in-process here "
                f"(--prm-base-url URL puts it on a server; --prm-base-url {IN_PROCESS} says so and silences this)"
            )
            models = dataclasses.replace(self.models, prm_base_url=IN_PROCESS)
            return load_engine(models, self.preset, ref, self.base_dir, role)

    @property
    def think_spec(self) -> ThinkSpec | None:
        """How the policy thinks (None: it does not), detected once; the one note line says what was found."""
        if self._think_spec is False:
            self._think_spec = detect(self.policy, self.preset)
        return self._think_spec

    def _say_thinking(self) -> None:
        """The one note line on what was detected, once, after a run's checks have passed."""
        if self.think_spec is not None and not self._think_noted:
            self._think_noted = True
            line = note(self.think_spec, self.policy.info.name)
            if getattr(self.policy, "client", None) is not None:  # an OpenAI-compatible server
                line += "; the server has no per-trace budget, so ttc enforces it (think, then answer, in phases)"
            self.note(line)

    def think_setup(self, opts: ThinkOptions | None = None) -> ThinkSetup | None:
        """The thinking block of a run with these flags (None for a model that does not think)."""
        opts = opts or ThinkOptions()
        key = (opts.budget, opts.min_tokens, opts.message, opts.mode)
        if key not in self._think_setups:
            self._think_setups[key] = setup(
                self.think_spec, opts, self.preset.thinking, self.policy, self.policy.info.name
            )
        return self._think_setups[key]

    def sampling_for(
        self, sampling: SamplingOverrides | None, think: ThinkSetup | None, seed: int
    ) -> tuple[SamplingParams, str | None]:
        """The run's sampling parameters (preset < flags), with the thinking control; and a note when a think
        budget raised max_tokens."""
        sampling = sampling or SamplingOverrides()
        params = sampling.apply(self.preset)
        params, raised = fit_max_tokens(think, params, sampling.max_tokens is not None, self.preset.thinking)
        if think is not None:
            params = dataclasses.replace(params, thinking=think.control)
        return dataclasses.replace(params, seed=seed), raised

    @property
    def default_strategy(self) -> str:
        """`auto` when the preset has a policy, else majority vote."""
        return "auto" if self.preset.policy else "majority"

    @property
    def policy_table(self):
        """The preset's compute-optimal policy, checked against the loaded model (a mismatch warns)."""
        if self._table is None and self.preset.policy:
            from .policy import load_policy

            path = Path(self.preset.policy)
            self._table = load_policy(path if path.is_absolute() else (self.base_dir or Path()) / path)
            name = self.policy.info.name
            if self._table.model != name:
                self.warn(f"policy {self._table.source} was calibrated for {self._table.model}, not {name}")
        return self._table

    def prior_table(self, with_prm: bool):
        """The built-in prior policy, for `auto` on a preset without a calibrated one (warns once)."""
        if self._prior is None:
            from .policy.prior import prior_policy

            self._prior = prior_policy(with_prm)
            self.warn(
                f"{self.preset.source or self.preset.name} has no calibrated policy (preset key policy:), so auto "
                "follows the built-in prior (answer agreement of 4 samples: stop when all agree, else a verifier-"
                "weighted vote or search); calibrate one with `ttc calibrate DATA.jsonl --out policy.yaml` and "
                "set policy: policy.yaml in the preset"
            )
        return self._prior

    def warn(self, message: str) -> None:
        import sys

        print(f"ttc: warning: {message}", file=sys.stderr)

    def note(self, message: str) -> None:
        import sys

        print(f"ttc: note: {message}", file=sys.stderr)

    @property
    def prm(self):
        """The preset's reward model; without one (or with format self-judge) the policy judges itself."""
        if self._prm is None:
            from .prm import MathShepherdPRM, RLHFlowPRM, SelfJudgePRM
            from .prompts import problem_prompt

            cfg = self.preset.prm
            where = self.preset.source or self.preset.name
            if cfg is None or cfg.format == "self-judge" or cfg.model is None:
                aggregation = cfg.aggregation if cfg is not None else "last"
                closed = self.think_setup(ThinkOptions(budget=0)) if self.think_spec is not None else None
                if closed is not None:  # a thinking model judges an answer after a closed block
                    prompt_for = lambda p: closed.prompt(self.preset, self.policy, p)  # noqa: E731
                else:
                    prompt_for = lambda p: problem_prompt(self.preset, self.policy, p)  # noqa: E731
                self._prm = SelfJudgePRM(self.policy, prompt_for, aggregation)
            elif cfg.format == "math-shepherd":
                self._prm = MathShepherdPRM(self._load(cfg.model, "prm"), cfg, self.preset.step_delimiter, where)
            elif cfg.format == "rlhflow":
                self._prm = RLHFlowPRM(self._load(cfg.model, "prm"), cfg, self.preset.step_delimiter, where)
            elif cfg.format in HEAD_PRM_FORMATS:
                engine = self._load(cfg.model, "prm")
                if hasattr(engine, "pooled_rows"):  # on a server: vLLM's pooling API (classifier heads)
                    from .prm.pooled import PooledHeadPRM

                    self._prm = PooledHeadPRM(engine, cfg, self.preset.step_delimiter, where)
                else:
                    from .prm.heads import HeadPRM

                    self._prm = HeadPRM(engine, cfg, self.preset.step_delimiter, self.base_dir, where)
            else:
                raise UsageError(f"{where}: prm.format '{cfg.format}' is not known ({', '.join(PRM_FORMATS)})")
        return self._prm

    def solve(
        self,
        problem: str,
        strategy: str,
        budget: int,
        seed: int = 0,
        sampling: SamplingOverrides | None = None,
        options: dict[str, Any] | None = None,
        progress=None,
        thinking: ThinkOptions | None = None,
        think_budget: int | None = None,
    ) -> Result:
        """One strategy run. `thinking`: the thinking flags (`think_budget` sets its budget alone)."""
        spec = get_strategy(strategy)
        name, variant_options = parse_variant(strategy)
        options = {**variant_options, **(options or {})}
        check_problem(problem)
        check_budget(budget)
        opts = thinking or ThinkOptions()
        if "think" in options:  # a strategy label's think budget (majority:think=256: bench --think-budgets)
            value = options.pop("think")
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"strategy option think (a think budget) must be a whole number >= 0, got {value!r}")
            opts = dataclasses.replace(opts, budget=value)
        if think_budget is not None:
            opts = dataclasses.replace(opts, budget=think_budget)
        think = self.think_setup(opts)
        if think is not None and think.enabled and spec.stepwise:
            raise UsageError(
                f"--strategy {name} searches a solution's steps, and {self.policy.info.name} writes a thinking trace "
                "instead: on a thinking model use greedy, majority, best-of-n, weighted-best-of-n, deepconf, "
                "self-certainty, adaptive or auto (or --thinking off / --think-budget 0)"
            )
        params, raised = self.sampling_for(sampling, think, seed)
        self._say_thinking()
        ctx = SolveContext(
            problem=problem.strip(),
            preset=self.preset,
            policy=self.policy,
            budget=budget,
            seed=seed,
            sampling=params,
            options=dict(options or {}),
            progress=progress,
            thinking=think,
        )
        if raised:
            ctx.warn(raised)
        if spec.wants_prm(options, configured=self.preset.prm is not None):
            ctx.prm = self.prm
        if spec.name == "auto":
            ctx.table = self.policy_table
            if ctx.table is None:  # the prior: without a configured PRM it votes by confidence, not self-judging
                ctx.prm = self.prm if self.preset.prm is not None else None
                ctx.table = self.prior_table(ctx.prm is not None)
        result = spec.run(ctx)
        return result if name == strategy else dataclasses.replace(result, strategy=strategy)

    def difficulty(
        self, problem: str, samples: int, budget: int | None, seed: int = 0, warn: bool = True
    ) -> dict[str, Any]:
        """Model-predicted difficulty: the mean final PRM score of `samples` scored samples, its level
        under the policy's thresholds, the answer agreement, and what `auto` would pick at `budget`."""
        from .policy import Policy
        from .strategies.adaptive import estimate_difficulty

        check_problem(problem)
        check_budget(samples)
        table = self.policy_table
        if table is None:
            table = Policy(model="", prm=None, samples=samples, thresholds=[0.8, 0.6, 0.4, 0.2], table={})
            if warn:
                self.warn("the preset has no calibrated policy: levels use even thresholds 0.8/0.6/0.4/0.2")
        think = self.think_setup()
        self._say_thinking()
        ctx = SolveContext(
            problem=problem.strip(), preset=self.preset, policy=self.policy, budget=samples, seed=seed,
            sampling=self.sampling_for(None, think, seed)[0], prm=self.prm, thinking=think,
        )  # fmt: skip
        est = estimate_difficulty(ctx, samples, table)
        out: dict[str, Any] = {
            "level": est.level,
            "mean_score": round(est.mean_score, 6),
            "agreement": round(est.agreement, 4),
            "estimator": table.estimator,
            "estimate": round(table.value(est.mean_score, est.agreement), 6),
            "samples": samples,
            "answers": [c.answer for c in est.candidates],
        }
        if budget is not None and table.table:
            check_budget(budget)
            choice, at, spend = table.plan(est.level, budget)
            out["auto_choice"] = {
                "budget": budget,
                "strategy": choice.strategy,
                "options": choice.options,
                "table_budget": at,
                "spend": spend,
            }
        return out

    def close(self) -> None:
        if self._prm is not None and self._prm.engine is not self._policy:
            self._prm.engine.close()
        if self._policy is not None:
            self._policy.close()


def load_engine(models: ModelOptions, preset: Preset, ref: str, base_dir: Path | None, role: str) -> Engine:
    """The engine for `role` ("policy" or "prm") with model reference `ref`: on the server the flags or the
    preset's `backend` section name, else in-process."""
    from .engine.openai.setup import local_copy, remote_spec

    spec = remote_spec(models, preset, role, ref)
    if spec is not None:
        from .engine.openai import OpenAIEngine

        return OpenAIEngine(
            spec.base_url, spec.served_model, model_hint=spec.model_hint, require_hint=spec.require_hint,
            concurrency=spec.concurrency, timeout_s=spec.timeout_s, max_retries=spec.max_retries, dialect=spec.dialect,
            local_model=local_copy(ref, base_dir),
        )  # fmt: skip
    from .engine.llama import LlamaEngine

    path = resolve_model(ref, base_dir=base_dir)
    return LlamaEngine(
        str(path), n_gpu_layers=models.n_gpu_layers, n_threads=models.threads, verbose=models.verbose,
        flash_attn=models.flash_attn,
    )  # fmt: skip


CHAT_PRESET = "chat-self-judge"  # for a model given with --model alone that has a chat template
BASE_PRESET = "base-few-shot"  # for one without (a base model)


def _is_builtin(ref: str, preset: Preset, base_dir: Path | None) -> bool:
    """Whether `ref` names the default preset's own model (then that preset fits it)."""
    if ref == preset.model or ref.startswith("builtin:"):
        return True
    if "://" in ref or ref.startswith("pypi:") or not preset.model.startswith("builtin:"):
        return False
    try:
        return Path(ref).expanduser().resolve() == resolve_model(preset.model, base_dir).resolve()
    except Exception:
        return False
