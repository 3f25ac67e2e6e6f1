"""The request scheduler (ttc.engine.scheduler) on the built-in policy in-process: calls from many threads
that arrive together run as one decode loop, each caller gets what it would have got alone, and a caller
that is cancelled stops at once and leaves nothing in the KV cache."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from ttc.engine.base import SamplingParams
from ttc.engine.llama import LlamaEngine
from ttc.engine.models import resolve_model
from ttc.engine.scheduler import Cancelled, Scheduler, bind

PROMPTS = [f"Problem: {p}\nSolution:\n" for p in ("37+48-19", "12+7", "91-45+3", "5+8+13", "66-13", "4+9-2")]
PARAMS = SamplingParams(temperature=0.8, max_tokens=64, stop=())


@pytest.fixture(scope="module")
def engine():
    e = LlamaEngine(str(resolve_model("builtin:tiny-arith-policy.gguf")), n_threads=1)
    yield e
    e.close()


def texts(completions):
    return [(c.text, c.finish_reason, c.n_generated) for c in completions]


def together(sched: Scheduler, calls):
    """Run calls (prompt, n, params) at once from one thread each; their completions and usages, in order."""
    out, usage = [None] * len(calls), [None] * len(calls)
    start = threading.Barrier(len(calls))

    def go(i):
        start.wait()
        out[i] = sched.sample(*calls[i])
        usage[i] = sched.usage.snapshot()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, usage


def test_calls_arriving_together_share_one_loop_and_each_gets_its_own_completions(engine):
    calls = [(p, 8, dataclasses.replace(PARAMS, seed=i)) for i, p in enumerate(PROMPTS)]
    alone = [engine.sample(*c) for c in calls]
    sched = Scheduler(engine, window_s=0.05)
    out, usage = together(sched, calls)
    assert [texts(o) for o in out] == [texts(a) for a in alone]
    assert sched.batches == [(len(calls), 8 * len(calls))]  # one decode loop for them all
    for o, u, (p, _, _) in zip(out, usage, calls):
        assert u.generated_tokens == sum(c.n_generated for c in o)  # each is charged its own tokens
        assert u.prompt_tokens == len(engine.tokenize(p))  # and its own prompt, once
    assert sched.kv_cells() == 0 and sched.running == 0


def test_different_settings_run_in_their_own_loops_with_their_own_results(engine):
    r = dataclasses.replace
    calls = [(PROMPTS[0], 4, PARAMS), (PROMPTS[1], 1, r(PARAMS, temperature=0)), (PROMPTS[2], 4, r(PARAMS, seed=9)),
             (PROMPTS[3], 2, r(PARAMS, top_p=0.9))]  # fmt: skip
    alone = [engine.sample(*c) for c in calls]
    sched = Scheduler(engine, window_s=0.05)
    out, _ = together(sched, calls)
    assert [texts(o) for o in out] == [texts(a) for a in alone]
    assert sorted(sched.batches) == [(1, 1), (1, 2), (2, 8)]


def test_waves_within_a_small_kv_limit_give_the_same_completions(engine, monkeypatch):
    monkeypatch.setenv("TTC_KV_MEMORY_MB", "1")  # room for a few continuations per wave
    calls = [(p, 6, dataclasses.replace(PARAMS, seed=i)) for i, p in enumerate(PROMPTS[:3])]
    alone = [engine.sample(*c) for c in calls]
    sched = Scheduler(engine, window_s=0.05)
    out, _ = together(sched, calls)
    assert [texts(o) for o in out] == [texts(a) for a in alone]


def test_a_cancelled_caller_stops_at_once_and_leaves_no_sequence_behind(engine):
    sched = Scheduler(engine, window_s=0.05)
    gone = threading.Event()
    caught: list[BaseException] = []
    other = dataclasses.replace(PARAMS, seed=3)
    alone = engine.sample(PROMPTS[1], 8, other)
    long = dataclasses.replace(PARAMS, max_tokens=192, ignore_eos=True)  # runs to max_tokens: ~1 s

    def doomed():
        with bind(gone.is_set):
            try:
                sched.sample(PROMPTS[0], 200, long)
            except Cancelled as e:
                caught.append(e)

    before = engine.usage.generated_tokens
    t = threading.Thread(target=doomed)
    t.start()
    while sched.running == 0:
        time.sleep(0.005)
    kept = []  # another caller, queued meanwhile, is served normally
    k = threading.Thread(target=lambda: kept.extend(sched.sample(PROMPTS[1], 8, other)))
    k.start()
    gone.set()
    t.join()
    k.join()
    assert caught and engine.usage.generated_tokens - before < 200 * 192 // 2  # stopped well before its end
    assert texts(kept) == texts(alone)
    assert sched.running == 0 and sched.kv_cells() == 0
    with bind(gone.is_set), pytest.raises(Cancelled):
        sched.sample(PROMPTS[2], 1, PARAMS)  # a gone caller's next call is refused
