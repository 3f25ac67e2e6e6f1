"""The llama.cpp engine on tiny random-weight GGUF models: batching, seeding, waves, stops, branches,
log-probabilities and the counts, each checked against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest

from ttc.engine.base import SamplingParams
from ttc.engine.llama import MAX_SEQ, LlamaBranches, _Context
from ttc.errors import UsageError

GREEDY = SamplingParams(temperature=0.0, max_tokens=24)
PROMPT = "Problem: 12+34\nSolution:\n"


def reference_greedy(path: str, prompt_tokens: list[int], n: int) -> list[int]:
    """Greedy tokens from llama-cpp-python's own high-level evaluation, one token at a time."""
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False, logits_all=True)
    llm.eval(prompt_tokens)
    out = []
    for _ in range(n):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(tok)
        llm.eval([tok])
    return out


def test_batched_greedy_equals_single_sequence_greedy(engine, tiny_gguf):
    batched = engine.sample(PROMPT, 8, GREEDY)
    single = engine.sample(PROMPT, 1, GREEDY)[0]
    assert all(c.tokens == single.tokens for c in batched)
    assert len(single.tokens) > 0
    ref = reference_greedy(str(tiny_gguf), engine.tokenize(PROMPT), len(single.tokens))
    assert single.tokens == ref[: len(single.tokens)]


def test_batched_branches_of_different_texts_equal_each_alone(engine):
    texts = ["1+1=", "9-4=5\n", "x"]
    with engine.branches(PROMPT, max_live=4, max_tokens=40) as bs:
        kids = bs.fork(0, 3)
        bs.feed(kids, texts, [[-1]] * 3, [0])
        together = bs.extend(kids, GREEDY)
    for text, got in zip(texts, together):
        alone = engine.sample(PROMPT + text, 1, GREEDY)[0]
        assert got.tokens == alone.tokens


def test_same_seed_gives_same_samples_and_other_seeds_differ(engine):
    p = SamplingParams(temperature=1.0, max_tokens=16, seed=7)
    a = [c.tokens for c in engine.sample(PROMPT, 6, p)]
    b = [c.tokens for c in engine.sample(PROMPT, 6, p)]
    c = [c.tokens for c in engine.sample(PROMPT, 6, SamplingParams(temperature=1.0, max_tokens=16, seed=8))]
    assert a == b
    assert a != c
    assert len({tuple(t) for t in a}) > 1  # the samples within one call differ from each other


def test_sample_i_does_not_depend_on_how_many_are_drawn(engine):
    p = SamplingParams(temperature=1.0, max_tokens=12, seed=3)
    few = engine.sample(PROMPT, 3, p)
    many = engine.sample(PROMPT, 9, p)
    assert [c.tokens for c in few] == [c.tokens for c in many[:3]]


def test_more_samples_than_sequences_run_in_waves(engine):
    p = SamplingParams(temperature=1.0, max_tokens=3, seed=11)
    n = MAX_SEQ + 44
    before = engine.usage.snapshot()
    out = engine.sample(PROMPT, n, p)
    spent = engine.usage - before
    assert len(out) == n
    first = engine.sample(PROMPT, 5, p)
    assert [c.tokens for c in out[:5]] == [c.tokens for c in first]
    # Two waves: the prompt is evaluated once per wave, however many samples share it.
    p_len = len(engine.tokenize(PROMPT))
    assert spent.prompt_tokens == 2 * p_len


def test_stop_strings_cut_exactly(engine):
    full = engine.sample(PROMPT, 1, SamplingParams(temperature=0.0, max_tokens=30))[0].text
    assert len(full) >= 8
    # A two-character stop string from the middle of the text (random weights emit invalid UTF-8 too).
    i = next(i for i in range(4, len(full) - 1) if "\ufffd" not in full[i : i + 2])
    stop = full[i : i + 2]
    at = full.index(stop)
    cut = engine.sample(PROMPT, 1, SamplingParams(temperature=0.0, max_tokens=30, stop=(stop,)))[0]
    assert cut.text == full[:at]
    assert cut.finish_reason == "stop" and cut.stop == stop
    kept = engine.sample(PROMPT, 1, SamplingParams(temperature=0.0, max_tokens=30, stop=(stop,), include_stop=True))[0]
    assert kept.text == full[: at + len(stop)]
    assert engine.detokenize(kept.tokens) == kept.text


def test_max_tokens_ends_with_length(engine):
    out = engine.sample(PROMPT, 2, SamplingParams(temperature=0.0, max_tokens=5))
    assert all(c.finish_reason in ("length", "eos") for c in out)
    assert all(c.n_generated <= 5 for c in out)


def test_fork_extend_drop_continue_as_a_fresh_evaluation_would(engine, tiny_gguf):
    step = SamplingParams(temperature=1.0, max_tokens=12, stop=("=",), include_stop=True, seed=5)
    with engine.branches(PROMPT, max_live=6, max_tokens=60) as bs:
        kids = bs.fork(0, 4)
        bs.drop([0])
        first = bs.extend(kids, step)
        after_first = bs.tokens(kids[1])
        bs.drop([kids[0]])
        grand = bs.fork(kids[1], 2)
        live = [kids[2], kids[3], *grand]
        second = bs.extend(live, SamplingParams(temperature=1.0, max_tokens=12, stop=("=",), include_stop=True, seed=9))
        for b, c in zip(live, second):
            assert bs.tokens(b)[-len(c.tokens) :] == c.tokens
        before_greedy = [bs.tokens(b) for b in live]
        greedy_next = bs.extend(live, GREEDY)
    assert first[1].tokens and before_greedy[2][: len(after_first)] == after_first
    for tokens, got in zip(before_greedy, greedy_next):
        assert got.tokens == reference_greedy(str(tiny_gguf), tokens, len(got.tokens))


def test_beam_steps_pay_only_for_new_tokens(engine):
    step = SamplingParams(temperature=1.0, max_tokens=6, seed=1)
    p_len = len(engine.tokenize(PROMPT))
    with engine.branches(PROMPT, max_live=8, max_tokens=60) as bs:
        before = engine.usage.snapshot()
        kids = bs.fork(0, 4)
        bs.drop([0])
        for _ in range(3):
            bs.extend(kids, step)
            new = []
            for k in kids[:2]:
                new += bs.fork(k, 2)
            bs.drop(kids)
            kids = new
        spent = engine.usage - before
    # Input evaluated: the prompt once. A forked branch's last sampled token is evaluated once for all
    # its children (one cell, many sequence ids), so nothing is ever evaluated twice.
    assert spent.prompt_tokens == p_len
    assert spent.decode_calls == 1 + 3 * 6  # the prompt, then one decode per generated position
    assert spent.generated_tokens == 3 * 4 * 6


def test_logprobs_at_positions_equal_each_text_evaluated_alone(engine, tiny_gguf):
    from llama_cpp import Llama

    prefix = "Problem: 3+4\nSolution:\n"
    suffixes = ["3+4=7\n", "3+4=8\n\\boxed{8}", "12"]
    positions = [[0, 3, -1], [-2, -1], [1]]
    ids = [ord("+"), ord("-"), ord("7")]
    got = engine.logprobs_at(prefix, suffixes, positions, ids)
    llm = Llama(model_path=str(tiny_gguf), n_ctx=512, n_threads=2, verbose=False, logits_all=True)
    pre = engine.tokenize(prefix)
    for s, pos, g in zip(suffixes, positions, got):
        suf = engine.tokenize(s, add_bos=False)
        llm.reset()
        llm.eval(pre + suf)
        for k, p in enumerate(pos):
            q = p if p >= 0 else len(suf) + p
            row = np.asarray(llm.scores[len(pre) + q], dtype=np.float64)
            want = row[ids] - (row.max() + np.log(np.exp(row - row.max()).sum()))
            # f16 KV and other batch shapes give float error of ~0.1%; a wrong position is off by nats
            np.testing.assert_allclose(g[k], want, atol=0.05)
        alone = engine.logprobs_at(prefix, [s], [pos], ids)[0]
        np.testing.assert_allclose(g, alone, atol=1e-4)


def test_n_samples_share_the_prompt_cells(engine):
    """64 samples of G tokens after a P-token prompt run in a context of about P + 64G cells, where
    unshared prompts would need 64(P + G)."""
    prompt = "Problem: " + "12+" * 100 + "1\nSolution:\n"
    p_tokens = engine.tokenize(prompt)
    g, n = 8, 64
    ctx = _Context(engine, len(p_tokens) + n * (g + 1), n + 1)
    try:
        assert ctx.n_ctx < n * (len(p_tokens) + g) / 10
        bs = LlamaBranches(engine, ctx, p_tokens, owns_context=False)
        kids = bs.fork(0, n)
        bs.drop([0])
        out = bs.run(kids, SamplingParams(temperature=1.0, max_tokens=g, seed=2))
        assert len(out) == n and all(c.n_generated >= 1 for c in out)
    finally:
        ctx.close()


def test_long_prompts_are_chunked_below_n_batch(engine):
    prompt = "1+" * 700 + "1="  # 1400+ tokens, more than one llama_decode may take
    before = engine.usage.snapshot()
    out = engine.sample(prompt, 2, SamplingParams(temperature=0.0, max_tokens=4))
    assert len(out) == 2
    assert (engine.usage - before).decode_calls >= 3


def test_a_prompt_longer_than_the_context_is_a_usage_error(engine):
    with pytest.raises(UsageError, match="context"):
        engine.sample("9" * 5000, 1, GREEDY)


def test_counts_add_up(engine):
    before = engine.usage.snapshot()
    out = engine.sample(PROMPT, 4, SamplingParams(temperature=1.0, max_tokens=10, seed=4))
    spent = engine.usage - before
    assert spent.generated_tokens == sum(c.n_generated for c in out)
    assert spent.prompt_tokens == len(engine.tokenize(PROMPT))
    assert spent.decode_calls >= max(c.n_generated for c in out)
    assert spent.wall_s > 0


def test_closed_branch_sets_lend_their_context_to_the_next(tiny_gguf):
    """Creating a llama.cpp context costs milliseconds, so a closed branch set's context is reused by the
    next one that fits (cleared: the new set sees none of the old tokens), and closing twice gives it
    back once."""
    from ttc.engine.base import SamplingParams
    from ttc.engine.llama import LlamaEngine

    engine = LlamaEngine(str(tiny_gguf), n_threads=2)  # its own, so no other test's spare contexts

    params = SamplingParams(temperature=0.0, max_tokens=8, seed=1)
    first = engine.branches("Problem: 1+2\nSolution:\n", max_live=4, max_tokens=16)
    kids = first.fork(0, 2)
    want = first.extend(kids, params)
    ctx = first.ctx
    first.close()
    first.close()
    assert engine._spare.count(ctx) == 1
    again = engine.branches("Problem: 1+2\nSolution:\n", max_live=2, max_tokens=16)
    assert again.ctx is ctx and ctx not in engine._spare
    got = again.extend(again.fork(0, 2), params)
    assert [c.text for c in got] == [c.text for c in want]
    again.close()
    big = engine.branches("Problem: 1+2\nSolution:\n", max_live=30, max_tokens=200)
    assert big.ctx is not ctx  # too small for it: a new one
    big.close()
    engine.close()
    assert engine._spare == []


def test_flash_attention_is_chosen_by_the_size_of_a_contexts_decodes(tiny_gguf, monkeypatch):
    """On the CPU, ggml's flash attention is slow for decodes of 2 to 63 tokens and fast from 64 up, so a
    context gets it only where its decodes are expected to reach 64 tokens (or it samples a single
    sequence, which is faster with it); a spare context is only lent
    to work with the same setting, and both settings give the same log-probabilities (to f16 rounding)."""
    from ttc.engine.llama import FLASH_MIN_TOKENS, LlamaEngine

    engine = LlamaEngine(str(tiny_gguf), n_threads=2)
    if engine.offloaded:
        pytest.skip("layers run on a GPU: llama.cpp chooses")
    assert engine.flash_for(FLASH_MIN_TOKENS - 1) is False and engine.flash_for(FLASH_MIN_TOKENS) is True
    small = engine.branches(PROMPT, max_live=5, max_tokens=16, scoring=True)  # 4 steps of ~8 tokens
    wide = engine.branches(PROMPT, max_live=9, max_tokens=16, scoring=True)  # 8 steps: 64 tokens
    gen = engine.branches(PROMPT, max_live=64, max_tokens=16)  # one token per live branch per decode
    assert (small.ctx.flash, wide.ctx.flash, gen.ctx.flash) == (False, True, False)
    small_ctx = small.ctx
    for bs in (small, wide, gen):
        bs.close()
    again = engine.branches(PROMPT, max_live=9, max_tokens=16, scoring=True)
    assert again.ctx is not small_ctx and again.ctx.flash is True
    again.close()

    suffixes = ["1+1=2\n", "3*4=12\n" * 12]
    positions = [[-1], [5, -1]]
    got = {}
    for mode in ("on", "off"):
        forced = LlamaEngine(str(tiny_gguf), n_threads=2, flash_attn=mode)
        got[mode] = forced.logprobs_at(PROMPT, suffixes, positions, [3, 5, 7])
        assert forced._ctx.flash is (mode == "on")
        forced.close()
    for a, b in zip(got["on"], got["off"]):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=5e-3, atol=1e-2)
    auto = engine.logprobs_at(PROMPT, suffixes, positions, [3, 5, 7])  # 90 tokens: one decode over 64
    assert engine._ctx.flash is True
    engine.sample(PROMPT, 4, GREEDY)  # four streams, one token each per decode
    assert engine._ctx.flash is False
    engine.sample(PROMPT, 1, GREEDY)  # a single stream decodes faster with it
    assert engine._ctx.flash is True
    np.testing.assert_allclose(auto[1], got["on"][1], atol=1e-5)
    engine.close()

    monkeypatch.setenv("TTC_FLASH_ATTN", "sometimes")
    with pytest.raises(UsageError, match="sometimes"):
        LlamaEngine(str(tiny_gguf), n_threads=2)


def test_flashbench_measures_every_shape_both_ways(tiny_gguf, capsys):
    from ttc.engine.llama.flashbench import SHAPES, main

    main([str(tiny_gguf), "--threads", "2", "--reps", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    feeds, samples = rows[: len(SHAPES)], rows[len(SHAPES) + 1 :]
    assert [tuple(map(int, r[:3])) for r in feeds] == SHAPES
    assert [int(r[0]) for r in samples] == [1, 2, 4, 8]
    assert all(float(r[-1]) > 0 for r in feeds + samples)  # a ratio of two measured times
