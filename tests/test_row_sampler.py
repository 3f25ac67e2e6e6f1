"""RowSampler (ttc/engine/llama/rows.py): large-vocabulary sampling in numpy draws from softmax(logits / T),
never draws masked tokens, is exactly argmax when greedy, and is wired into the engine with per-sample seeds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ttc.engine.llama.rows import BLOCK, MIN_VOCAB, RowSampler, applies, generator

# A vocabulary that is not a multiple of BLOCK, so the last block is partly padding.
V = MIN_VOCAB + 3 * BLOCK + 77


def peaked_logits(rng: np.random.Generator, hot: np.ndarray) -> np.ndarray:
    """Flat-ish logits with a few hot tokens that hold most of the probability."""
    x = rng.normal(0.0, 1.0, size=V).astype(np.float32)
    x[hot] += rng.uniform(8.0, 11.0, size=len(hot)).astype(np.float32)
    return x


def softmax(x: np.ndarray, t: float) -> np.ndarray:
    z = x.astype(np.float64) / t
    p = np.exp(z - z.max())
    return p / p.sum()


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# The 1e-6 upper tail of the chi-square distribution with 16 degrees of freedom is about 56.
CHI2_BOUND_16DF = 56.0


@pytest.mark.parametrize("temperature", [0.8, 1.7])
def test_draws_follow_softmax_over_the_full_vocabulary(temperature):
    rng = np.random.default_rng(1)
    # Hot tokens in the first block, the middle, and the padded last block; the rest of the vocabulary
    # (many thousands of tokens) is one more bin, with about as much mass as a hot token.
    hot = np.array([0, 3, 511, 512, 9000, 20000, 20001, 30000, 31000, MIN_VOCAB, V - 80, V - 2, V - 1, 77, 600])
    logits = peaked_logits(rng, hot)
    p = softmax(logits, temperature)
    sampler = RowSampler(V, temperature)
    blocks, cum = sampler.weights(logits[None, :].copy())
    g = generator(123)
    n = 30_000
    draws = np.array([sampler.draw(blocks, cum, 0, g.random()) for _ in range(n)])
    assert draws.min() >= 0 and draws.max() < V
    bins = {int(t): k for k, t in enumerate(hot)}
    counts = np.zeros(len(hot) + 1)
    for d in draws:
        counts[bins.get(int(d), len(hot))] += 1
    probs = np.append(p[hot], 1.0 - p[hot].sum())
    assert probs.min() * n > 20  # every bin is expected to be well filled: the bound below means something
    assert chi_square(counts, probs) < CHI2_BOUND_16DF


def test_rows_are_sampled_independently_and_masked_tokens_never():
    rng = np.random.default_rng(2)
    hot_a, hot_b = np.array([5, 30000]), np.array([7, 600])
    a, b = peaked_logits(rng, hot_a), peaked_logits(rng, hot_b)
    a[V - 1] = b[V - 1] = 40.0  # an "end of generation" token that would win every draw unmasked
    sampler = RowSampler(V, 1.0, masked=[V - 1])
    blocks, cum = sampler.weights(np.stack([a, b]))
    g = generator(7)
    got_a = {sampler.draw(blocks, cum, 0, g.random()) for _ in range(300)}
    got_b = {sampler.draw(blocks, cum, 1, g.random()) for _ in range(300)}
    assert V - 1 not in got_a | got_b
    assert set(hot_a) <= got_a and set(hot_b) <= got_b  # each hot token holds about half its row's mass
    assert not got_a & set(hot_b) and not got_b & set(hot_a)
    # u at the very ends of [0, 1) picks tokens with weight, never padding or a masked token
    for u in (0.0, np.nextafter(1.0, 0.0)):
        t = sampler.draw(blocks, cum, 0, u)
        assert 0 <= t < V - 1 and blocks[0].reshape(-1)[t] > 0


def test_greedy_is_the_first_argmax_of_unmasked_logits():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, V)).astype(np.float32)
    x[0, [10, 20]] = 9.0  # a tie: the first index wins, as in llama.cpp's greedy sampler
    x[1, V - 1] = 50.0  # masked winner: the best unmasked token is chosen instead
    x[2, 123] = 9.0
    best = RowSampler(V, 0.0, masked=[V - 1]).greedy(x)
    masked = x.copy()
    masked[:, V - 1] = -np.inf
    assert best.tolist() == [10, int(masked[1].argmax()), 123]


def test_same_seed_same_draws():
    logits = peaked_logits(np.random.default_rng(4), np.array([1, 2, 3]))[None, :]
    sampler = RowSampler(V, 0.8)
    blocks, cum = sampler.weights(logits)
    one = [sampler.draw(blocks, cum, 0, u) for u in generator(99).random(50)]
    two = [sampler.draw(blocks, cum, 0, u) for u in generator(99).random(50)]
    other = [sampler.draw(blocks, cum, 0, u) for u in generator(100).random(50)]
    assert one == two and one != other


def test_applies_only_to_large_untruncated_vocabularies():
    assert applies(262_144, 0, 1.0) and applies(MIN_VOCAB, 0, 1.0)
    assert not applies(259, 0, 1.0)  # the built-in pair keeps llama.cpp's chain (pinned samples)
    assert not applies(262_144, 40, 1.0) and not applies(262_144, 0, 0.95)


# ---- in the engine: a random model with a vocabulary above MIN_VOCAB -------------------------------------


@pytest.fixture(scope="module")
def big_vocab_engine(tmp_path_factory):
    from conftest import make_tiny_gguf

    from ttc.engine.llama import LlamaEngine

    words = tuple(f"<w{i}>" for i in range(MIN_VOCAB))
    path = make_tiny_gguf(tmp_path_factory.mktemp("big") / "big-vocab.gguf", user_tokens=words, n_embd=32, n_ff=64)
    eng = LlamaEngine(str(path), n_threads=2)
    assert eng.n_vocab >= MIN_VOCAB
    yield eng
    eng.close()


def test_engine_greedy_equals_llama_cpp_greedy_chain(big_vocab_engine, monkeypatch):
    import ttc.engine.llama.branches as branches
    from ttc.engine.base import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=12, seed=0, ignore_eos=True)
    fast = [c.tokens for c in big_vocab_engine.sample("hello <w5>", 3, params)]
    monkeypatch.setattr(branches, "applies", lambda *a: False)  # llama.cpp's own chain, row by row
    chain = [c.tokens for c in big_vocab_engine.sample("hello <w5>", 3, params)]
    assert fast == chain and len(fast[0]) == 12


def test_engine_same_seed_same_tokens_and_sample_i_depends_only_on_seed_and_i(big_vocab_engine):
    from ttc.engine.base import SamplingParams

    params = SamplingParams(temperature=0.8, max_tokens=10, seed=5, ignore_eos=True)
    four = [c.tokens for c in big_vocab_engine.sample("hello", 4, params)]
    again = [c.tokens for c in big_vocab_engine.sample("hello", 4, params)]
    two = [c.tokens for c in big_vocab_engine.sample("hello", 2, params)]
    other = [c.tokens for c in big_vocab_engine.sample("hello", 2, dataclasses.replace(params, seed=6))]
    assert four == again
    assert four[:2] == two
    assert len({tuple(t) for t in four}) == 4 and two != other
    assert all(len(t) == 10 for t in four)
