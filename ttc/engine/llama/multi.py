"""Several prompts' samples in one decode loop: what the request scheduler (ttc.engine.scheduler) asks of
the llama.cpp engine when calls of `sample` from several callers arrive together.

Every job is one `sample(prompt, n, params)` call. Jobs run together share their sampling settings except
the seed (the scheduler groups them so), and each continuation keeps the seed it would have had alone
(`derive_seed(job seed, i)`), so a job gets the completions it would have got by itself. A wave holds as
many continuations as one context takes (256 sequences, the roots included) within the KV memory limit
(`LlamaEngine.kv_limit_bytes`); a job larger than what is left of a wave goes on in the next one.

What each job cost is charged to it alone: its prompt's evaluation, its own generated tokens, and the
decode calls and wall time of the waves it was in (which it shared with the others).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ...errors import UsageError
from ..base import Completion, SamplingParams, Usage, Watch, derive_seed
from .branches import LlamaBranches
from .context import MAX_SEQ


@dataclass
class Job:
    """One caller's `sample` call."""

    prompt_tokens: list[int]
    n: int
    params: SamplingParams  # its own seed; every other field equal within one call of `sample_together`
    watch: Watch | None = None
    cancelled: Callable[[], bool] = lambda: False  # the caller is gone: stop its continuations
    out: list[Completion | None] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


class _Routed(Watch):
    """One wave's watch: continuation j of the wave is continuation `local` of job `job`."""

    def __init__(self, where: list[tuple[Job, int]]):
        self.where = where

    def step(self, index, stats) -> bool:
        job, local = self.where[index]
        return job.watch is None or job.watch.step(local, stats)

    def finished(self, index, completion) -> None:
        job, local = self.where[index]
        if job.watch is not None:
            job.watch.finished(local, completion)


def waves(engine, jobs: list[Job]) -> list[list[tuple[Job, int, int]]]:
    """The jobs' continuations cut into waves of (job, first, count): a wave holds at most MAX_SEQ sequences
    (its roots and continuations) and fits the KV memory limit with every continuation at max_tokens."""
    max_tokens = jobs[0].params.max_tokens
    cells = engine.kv_limit_bytes() // max(1, engine.kv_bytes_per_cell())
    out: list[list[tuple[Job, int, int]]] = []
    wave: list[tuple[Job, int, int]] = []
    used_seq = used_cells = 0
    for job in jobs:
        first = 0
        while first < job.n:
            room_seq = MAX_SEQ - used_seq - 1  # one for this job's root
            room_cells = (cells - used_cells - len(job.prompt_tokens) - 1) // (max_tokens + 1)
            k = min(job.n - first, room_seq, room_cells)
            if k < 1:
                if not wave:  # one continuation alone does not fit: as the engine does, run one anyway
                    k = 1
                else:
                    out.append(wave)
                    wave, used_seq, used_cells = [], 0, 0
                    continue
            wave.append((job, first, k))
            used_seq += k + 1
            used_cells += len(job.prompt_tokens) + k * (max_tokens + 1) + 1
            first += k
    if wave:
        out.append(wave)
    return out


def sample_together(engine, jobs: list[Job], flash: bool | None) -> None:
    """Run the jobs (see the module docstring); each job's `out` gets its n completions, its `usage` what it
    cost. `flash`: the flash-attention setting each job would have had alone (the scheduler groups by it)."""
    if not jobs:
        return
    base = jobs[0].params
    for job in jobs:
        if job.n < 1:
            raise UsageError(f"number of samples must be at least 1, got {job.n}")
        engine.check_fits(len(job.prompt_tokens), job.params.max_tokens)
        job.out = [None] * job.n
    for wave in waves(engine, jobs):
        wave = [w for w in wave if not w[0].cancelled()]  # a caller gone before its wave began
        if wave:
            _run_wave(engine, wave, base, flash)


def _run_wave(engine, wave: list[tuple[Job, int, int]], params: SamplingParams, flash: bool | None) -> None:
    t0 = time.perf_counter()
    before = engine.usage.snapshot()
    n_seq = sum(k + 1 for _, _, k in wave)
    n_ctx = sum(len(j.prompt_tokens) + k * (params.max_tokens + 1) + 1 for j, _, k in wave)
    with engine.timed():
        ctx = engine._shared_context(n_ctx, n_seq, flash)
        bs = LlamaBranches(engine, ctx, wave[0][0].prompt_tokens, owns_context=False)
        roots = [0] + [bs.add_root(j.prompt_tokens) for j, _, _ in wave[1:]]
        settled = [engine.usage.prompt_tokens]
        for r in roots:  # each root read by itself, so each job is charged its own prompt exactly
            bs.settle([r])
            settled.append(engine.usage.prompt_tokens)
        ids, seeds, where = [], [], []
        for (job, first, k), r in zip(wave, roots):
            ids += bs.fork(r, k)
            seeds += [derive_seed(job.params.seed, first + i) for i in range(k)]
            where += [(job, first + i) for i in range(k)]
        bs.drop(roots)
        watch = _Routed(where) if any(j.watch is not None for j, _, _ in wave) else None
        try:
            done = bs.run(ids, params, 0, watch, seeds=seeds, cancel=lambda i: where[i][0].cancelled())
        finally:
            bs.drop(list(bs.live))  # the wave's sequences leave the cache whatever happened
    spent = engine.usage - before
    wall = time.perf_counter() - t0
    shared_prompt = spent.prompt_tokens - (settled[-1] - settled[0])  # the roots' last tokens, one each
    for c, (job, local) in zip(done, where):
        job.out[local] = c
    for i, (job, first, k) in enumerate(wave):
        job.usage.prompt_tokens += settled[i + 1] - settled[i] + shared_prompt // len(wave)
        job.usage.generated_tokens += sum(c.n_generated for c in job.out[first : first + k])
        job.usage.decode_calls += spent.decode_calls
        job.usage.wall_s += wall


def _contexts(engine) -> list:
    found = [engine._ctx, *engine._spare, getattr(engine, "_hidden_spare", None)]
    return [c for c in found if c is not None and c.ctx]


def kv_cells(engine) -> int:
    """KV cells that sequences hold in the engine's contexts (its shared one, the spare ones): 0 when
    nothing is left behind. A cell shared by several sequences counts once per sequence."""
    lc, n = engine.lc, 0
    for c in _contexts(engine):
        for seq in range(c.n_seq):
            hi = lc.llama_memory_seq_pos_max(c.mem, seq)
            if hi >= 0:
                n += hi - lc.llama_memory_seq_pos_min(c.mem, seq) + 1
    return n


def clear_idle(engine) -> None:
    """Empty every context the engine keeps for reuse (nothing is using them: the scheduler is idle)."""
    for c in _contexts(engine):
        if c.kept is None:  # a kept prefix (a PRM's system prompt, hidden.py) stays: it is reused on purpose
            c.clear()
