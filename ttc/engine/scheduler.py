"""One engine for many concurrent callers (the requests of `ttc serve`): calls of `sample` that arrive
together run in the same decode batches, everything else on the engine runs one call at a time.

`Scheduler(engine)` is an ordinary Engine to the strategies that use it, safe to call from many threads:

- `sample`: the call waits in a queue. A worker thread takes what has gathered within `window_s` of the
  first arrival (and whatever came while the engine was busy), groups the calls whose sampling settings
  agree except the seed, and runs each group as one decode loop over all their prompts in one context
  (ttc.engine.llama.multi: waves within the KV memory limit). Each caller gets exactly the completions
  it would have got alone: continuation i depends only on (its seed, i). Engines without that ability
  (the HTTP backend, which batches on its server) run each call by itself.
- `branches`, `logprobs_at`, `hidden_at`, `hidden_branches` and every operation on their branch sets run
  under one lock, one at a time; step-wise search is so served between the sampling batches, not batched
  across requests.
- `usage` is per thread, like the HTTP backend's: each request sees what its own work cost (its prompt,
  its own tokens, and the decode calls and time of the batches it took part in).
- `bind(cancelled)` (module level): the calling thread's work is abandoned once `cancelled()` is true: its continuations
  stop at the next decode step, its sequences leave the KV cache, and its next engine call raises
  `Cancelled`. When no work is left, every context the engine keeps is emptied, so an idle server holds
  no sequence in its KV cache (`kv_cells` reads that).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager

from ..errors import TTCRuntimeError
from .base import BranchSet, Completion, Engine, SamplingParams, ThreadUsage, Watch

WINDOW_S = 0.01  # how long the first call of a batch waits for others to join it
DELEGATED = ("token_text", "piece", "is_eog", "eog_tokens", "n_vocab")  # read-only facts of the engine


_BOUND = threading.local()  # the calling thread's `cancelled`, for every scheduler


def _never() -> bool:
    return False


@contextmanager
def bind(cancelled: Callable[[], bool]):
    """Work this thread does inside, on any scheduler, is abandoned once `cancelled()` is true."""
    old = getattr(_BOUND, "cancelled", None)
    _BOUND.cancelled = cancelled
    try:
        yield
    finally:
        _BOUND.cancelled = old


class Cancelled(TTCRuntimeError):
    """The caller's request was abandoned (its client went away)."""


class _Pending:
    def __init__(self, job, cancelled: Callable[[], bool]):
        self.job, self.cancelled = job, cancelled
        self.done = threading.Event()
        self.error: BaseException | None = None


class Scheduler(ThreadUsage, Engine):
    """See the module docstring."""

    thread_safe = True

    def __init__(self, engine: Engine, window_s: float = WINDOW_S):
        self.inner = engine
        self.info = engine.info
        self.window_s = window_s
        self.batching = hasattr(engine, "kv_limit_bytes") and hasattr(engine, "_shared_context")
        self._lock = threading.RLock()  # one operation at a time on the engine
        self._local = threading.local()
        self._cv = threading.Condition()
        self._queue: list[_Pending] = []
        self._busy = 0  # operations under way or waiting (queued calls included)
        self._closed = False
        self._worker: threading.Thread | None = None
        self.running = 0  # continuations in the decode loop now
        self.batches: list[tuple[int, int]] = []  # (calls, continuations) of each batch run, the last 64

    # -- per-thread state (usage: ThreadUsage's) ------------------------------------------------------------
    def _cancelled(self) -> Callable[[], bool]:
        return getattr(_BOUND, "cancelled", None) or _never

    def check(self) -> None:
        if self._cancelled()():
            raise Cancelled("the request was cancelled")

    def __getattr__(self, name: str):
        if name in DELEGATED:
            return getattr(self.inner, name)
        raise AttributeError(name)

    @contextmanager
    def exclusive(self):
        """Run the body alone on the engine, charging what it spent to this thread."""
        self.check()
        with self._cv:
            self._busy += 1
        try:
            with self._lock:
                before = self.inner.usage.snapshot()
                try:
                    yield
                finally:
                    self.usage = self.usage + (self.inner.usage - before)
        finally:
            self._leave()

    def _leave(self) -> None:
        with self._cv:
            self._busy -= 1
            idle = self._busy == 0
        if idle and self.batching and self._lock.acquire(blocking=False):
            try:
                from .llama.multi import clear_idle

                clear_idle(self.inner)
            finally:
                self._lock.release()

    # -- the Engine interface -----------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]:
        return self.inner.tokenize(text, add_bos, special)  # the vocabulary is only read

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.inner.detokenize(tokens)

    def sample(self, prompt: str, n: int, params: SamplingParams, watch: Watch | None = None) -> list[Completion]:
        if not self.batching:
            with self.exclusive():
                return self.inner.sample(prompt, n, params, watch)
        from .llama.multi import Job

        self.check()
        p = _Pending(Job(self.inner.tokenize(prompt), n, params, watch), self._cancelled())
        p.job.cancelled = p.cancelled
        with self._cv:
            self._busy += 1
            self._queue.append(p)
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name="ttc-scheduler", daemon=True)
                self._worker.start()
            self._cv.notify_all()
        try:
            p.done.wait()
        finally:
            self._leave()
        if p.error is not None:
            raise p.error
        self.usage = self.usage + p.job.usage
        self.check()
        return list(p.job.out)

    def branches(self, prompt, max_live, max_tokens, scoring=False, feed_tokens=0) -> BranchSet:
        with self.exclusive():
            return _Locked(self, self.inner.branches(prompt, max_live, max_tokens, scoring, feed_tokens))

    def hidden_branches(self, prompt, max_live, max_tokens, keep=""):
        with self.exclusive():
            return _Locked(self, self.inner.hidden_branches(prompt, max_live, max_tokens, keep))

    def logprobs_at(self, prefix, suffixes, positions, token_ids):
        with self.exclusive():
            return self.inner.logprobs_at(prefix, suffixes, positions, token_ids)

    def hidden_at(self, prefix, suffixes, positions, keep=""):
        with self.exclusive():
            return self.inner.hidden_at(prefix, suffixes, positions, keep)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=60)
        with self._lock:
            self.inner.close()

    # -- state --------------------------------------------------------------------------------------------
    def kv_cells(self) -> int | None:
        """KV cells held by sequences in the engine's contexts now (None: the engine is busy, or keeps none)."""
        if not self.batching or not self._lock.acquire(timeout=0.5):
            return None
        try:
            from .llama.multi import kv_cells

            return kv_cells(self.inner)
        finally:
            self._lock.release()

    def queued(self) -> int:
        with self._cv:
            return len(self._queue)

    # -- the worker ---------------------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed and not self._queue:
                    return
            time.sleep(self.window_s)  # let the others of a burst arrive
            with self._cv:
                batch, self._queue = self._queue, []
            with self._lock:
                self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        from .llama.multi import sample_together

        groups: dict[tuple, list[_Pending]] = {}
        for p in batch:
            if p.cancelled():
                p.error = Cancelled("the request was cancelled")
                p.done.set()
                continue
            groups.setdefault(self._key(p.job), []).append(p)
        for (_, flash), members in groups.items():
            jobs = [p.job for p in members]
            self.running = sum(j.n for j in jobs)
            try:
                sample_together(self.inner, jobs, flash)
            except BaseException as e:  # every caller of the group learns of it
                for p in members:
                    p.error = e
            finally:
                self.running = 0
                self.batches = [*self.batches[-63:], (len(jobs), sum(j.n for j in jobs))]
                for p in members:
                    p.done.set()

    def _key(self, job) -> tuple:
        """Calls that may share a decode loop: the same settings but the seed, and the flash-attention setting
        each would have had alone (a batch's logits then equal each call's own)."""
        k = max(1, min(job.n, 255))
        return dataclasses.replace(job.params, seed=0), self.inner.flash_for(k // 2, k == 1)


class _Locked(BranchSet):
    """A branch set whose every operation runs alone on the scheduler's engine (see Scheduler)."""

    def __init__(self, owner: Scheduler, inner: BranchSet):
        self.owner, self.inner = owner, inner

    def fork(self, branch, k=1):
        with self.owner.exclusive():
            return self.inner.fork(branch, k)

    def drop(self, branches):
        with self.owner.exclusive():
            return self.inner.drop(branches)

    def extend(self, branches, params):
        with self.owner.exclusive():
            return self.inner.extend(branches, params)

    def feed(self, branches, texts, positions, token_ids):
        with self.owner.exclusive():
            return self.inner.feed(branches, texts, positions, token_ids)

    def feed_hidden(self, branches, texts, positions):
        with self.owner.exclusive():
            return self.inner.feed_hidden(branches, texts, positions)

    def text(self, branch):
        return self.inner.text(branch)

    def __getattr__(self, name):  # tokens, is_finished and the like: reads of the branch set's own lists
        return getattr(self.inner, name)

    def close(self):
        with self.owner._lock:
            self.inner.close()
