"""What `ttc serve` runs behind its HTTP handlers: one Solver whose in-process engines are wrapped in the
request scheduler (ttc.engine.scheduler), so that the strategy runs of all requests share decode batches,
and a pool of threads that run them.

`Service.answer(plan, cancelled)` runs a request's strategy runs (n per problem, concurrently: they batch
together too) or its plain completions, and returns its choices. `cancelled()` becoming true (the client
went away) abandons the runs: their sequences stop at the next decode step and leave the KV cache.
"""

from __future__ import annotations

import inspect
import threading
from concurrent.futures import ThreadPoolExecutor

from ..engine.base import SamplingParams
from ..engine.scheduler import Cancelled, Scheduler, bind
from ..errors import UsageError
from ..solve import ModelOptions, SamplingOverrides, Solver, max_budget
from .protocol import PREFIX, ApiError, Plan
from .responses import Choice, from_result

STACK_BYTES = 256 << 20  # of each request thread (virtual memory, touched only as deep as it is used)
CHARS_PER_TOKEN = 8
RAW_FINISH = {"stop": "stop", "eos": "stop", "length": "length"}


class _ServedSolver(Solver):
    """The Solver with its in-process engines behind a scheduler (HTTP engines are thread-safe already)."""

    def _load(self, ref: str, role: str = "policy"):
        engine = super()._load(ref, role)
        return engine if getattr(engine, "thread_safe", False) else Scheduler(engine)


class Service:
    def __init__(self, models: ModelOptions, parallel: int = 32):
        self.solver = _ServedSolver(models)
        policy = self.solver.policy  # load every model now, before the first request
        if self.solver.preset.prm is not None:
            self.solver.prm  # noqa: B018
        if self.solver.preset.policy:
            self.solver.policy_table  # noqa: B018
        self.raw_name = policy.info.name
        # llama.cpp's tokenizer recurses per character of a long unbroken run (a 40,000-digit word overflows an
        # 8 MB thread stack and kills the process): the threads that tokenize get deep stacks, and a prompt
        # is capped at CHARS_PER_TOKEN characters per token of context, past which it could not fit anyway
        threading.stack_size(STACK_BYTES)
        self.max_prompt_chars = CHARS_PER_TOKEN * max(policy.info.n_ctx_train, 1)
        self.pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="ttc-request")  # requests
        self.runs = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="ttc-run")  # their strategy runs
        self.max_budget = max_budget()
        self.takes_think_budget = "think_budget" in inspect.signature(Solver.solve).parameters

    @property
    def schedulers(self) -> list[Scheduler]:
        found = [self.solver.policy, getattr(self.solver._prm, "engine", None)]
        out: list[Scheduler] = []
        for e in found:
            if isinstance(e, Scheduler) and e not in out:
                out.append(e)
        return out

    def models(self) -> list[dict]:
        from ..strategies.base import REGISTRY

        info = self.solver.policy.info
        meta = {"n_params": info.n_params, "n_ctx_train": info.n_ctx_train}
        names = [PREFIX] + [f"{PREFIX}/{s}" for s in REGISTRY]
        cards = [{"id": m, "object": "model", "created": 0, "owned_by": "ttc"} for m in names]
        cards.append({"id": self.raw_name, "object": "model", "created": 0, "owned_by": "ttc", "meta": meta,
                      "max_model_len": info.n_ctx_train})  # fmt: skip
        return cards

    def state(self) -> dict:
        s = self.schedulers
        return {
            "running_sequences": sum(x.running for x in s),
            "queued_calls": sum(x.queued() for x in s),
            "kv_cells": None if any(x.kv_cells() is None for x in s) else sum(x.kv_cells() for x in s),
            "batches": [list(b) for x in s for b in x.batches[-16:]],  # (calls, continuations) of recent batches
        }

    def check(self, plan: Plan) -> None:
        """What can be refused before any work beyond the request's own syntax: think_budget where the Solver
        takes none."""
        for text in plan.problems:
            if len(text) > self.max_prompt_chars:
                raise ApiError(f"a prompt of {len(text)} characters is over the limit of {self.max_prompt_chars} "
                               f"({CHARS_PER_TOKEN} per token of {self.raw_name}'s context)",
                               param="messages" if plan.chat else "prompt", code="context_length_exceeded")  # fmt: skip
        if plan.think_budget is not None and not self.takes_think_budget:
            raise ApiError("'ttc.think_budget' is not supported by this ttc's solver", param="ttc.think_budget")

    def answer(self, plan: Plan, cancelled) -> list[Choice]:
        jobs = [(p, s) for p in plan.problems for s in plan.seeds]
        one = self._raw if plan.raw else self._run
        if plan.raw:
            jobs = [(p, plan.seeds[0]) for p in plan.problems]
        futures = [self.runs.submit(self._bound, one, plan, p, s, cancelled) for p, s in jobs]
        out: list[Choice] = []
        for f in futures:
            got = f.result()
            out.extend(got if isinstance(got, list) else [got])
        return out

    @staticmethod
    def _bound(fn, plan, problem, seed, cancelled):
        with bind(cancelled):
            try:
                return fn(plan, problem, seed)
            except Cancelled:
                raise
            except UsageError as e:
                raise ApiError(str(e)) from None

    def _run(self, plan: Plan, problem: str, seed: int) -> Choice:
        sampling = SamplingOverrides(plan.temperature, plan.top_p, plan.top_k, plan.max_tokens)
        extra = {"think_budget": plan.think_budget} if plan.think_budget is not None else {}
        strategy = plan.strategy or self.solver.default_strategy
        result = self.solver.solve(problem, strategy, plan.budget, seed=seed, sampling=sampling,
                                   options=dict(plan.options), **extra)  # fmt: skip
        return from_result(result, plan.stop)

    def _raw(self, plan: Plan, prompt: str, seed: int) -> list[Choice]:
        """n plain completions of the prompt by the policy (choice i samples with seed (seed, i))."""
        engine = self.solver.policy
        params = SamplingParams(
            temperature=1.0 if plan.temperature is None else plan.temperature,
            top_p=1.0 if plan.top_p is None else plan.top_p,
            top_k=max(0, plan.top_k or 0),
            max_tokens=16 if plan.max_tokens is None else plan.max_tokens,
            stop=tuple(plan.stop),
            seed=seed & 0xFFFFFFFF,
            ignore_eos=plan.ignore_eos,
        )
        before = engine.usage.snapshot()
        done = engine.sample(prompt, len(plan.seeds), params)
        spent = engine.usage - before
        out = []
        for i, c in enumerate(done):
            share = (spent.prompt_tokens if i == 0 else 0), c.n_generated
            out.append(Choice(c.text, RAW_FINISH.get(c.finish_reason, "stop"), None, *share, None, c.stop))
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.runs.shutdown(wait=True, cancel_futures=True)
        self.solver.close()
