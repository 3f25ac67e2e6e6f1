"""Sampling contexts are sized for every sequence running to max_tokens; a bound on that KV memory splits the
samples into waves without changing them (sample i's seed depends only on i)."""

from __future__ import annotations

import pytest

from ttc.engine.base import SamplingParams
from ttc.errors import UsageError


def test_kv_bytes_per_cell_follows_the_model_shape(engine):
    lc, m = engine.lc, engine.llm.model
    head = lc.llama_model_n_embd(m) // lc.llama_model_n_head(m)
    assert engine.kv_bytes_per_cell() == lc.llama_model_n_layer(m) * lc.llama_model_n_head_kv(m) * 2 * head * 2


def test_a_kv_memory_bound_runs_samples_in_waves_with_the_same_tokens(engine, monkeypatch):
    p = SamplingParams(temperature=1.0, max_tokens=24, seed=5)
    prompt = "Problem: 1+2\nSolution:\n"
    together = [c.tokens for c in engine.sample(prompt, 6, p)]
    calls_before = engine.usage.decode_calls
    cell = engine.kv_bytes_per_cell()
    need_one = (len(engine.tokenize(prompt)) + 1 + 2 * (p.max_tokens + 1)) * cell  # room for two sequences
    monkeypatch.setenv("TTC_KV_MEMORY_MB", str(max(1, need_one >> 20)))
    monkeypatch.setattr(type(engine), "kv_limit_bytes", staticmethod(lambda: need_one))
    asked = []
    shared = engine._shared_context
    monkeypatch.setattr(
        engine, "_shared_context", lambda n_ctx, n_seq, flash: asked.append(n_seq) or shared(n_ctx, n_seq, flash)
    )
    waves = [c.tokens for c in engine.sample(prompt, 6, p)]
    assert waves == together
    assert asked == [3, 3, 3]  # three waves of two sequences (plus the prompt's)
    assert engine.usage.decode_calls > calls_before


def test_a_bad_kv_memory_setting_is_refused(engine, monkeypatch):
    monkeypatch.setenv("TTC_KV_MEMORY_MB", "lots")
    with pytest.raises(UsageError, match="TTC_KV_MEMORY_MB"):
        engine.kv_limit_bytes()
