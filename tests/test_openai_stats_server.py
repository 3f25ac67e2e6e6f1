"""Token statistics and the Watch through llama-cpp-python's real server (`python -m llama_cpp.server` on
127.0.0.1, a tiny random ASCII model), against the in-process engine's logits on the same file.

Invariants: the streamed statistics are approximate (top-k) and agree with the in-process log-softmax of the same
tokens (the sampled token's log-probability and the top-20 confidence); a Watch that stops a continuation gets
a "killed" completion with the tokens it saw, usage counts them, and the server stops generating (with
--interrupt_requests False, a request sent right after is answered long before the server could have finished
the abandoned one); a request from another client during a stream (which that server, by default, answers by
interrupting the stream) is one clean error line.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_openai_backend import Server, make_ascii_gguf

from ttc.engine.base import SamplingParams, Watch
from ttc.engine.llama import LlamaEngine
from ttc.engine.openai import OpenAIEngine
from ttc.errors import TTCRuntimeError

pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")

PROMPT = "Problem: 12+7\nSolution:\n"
K = 20
# Largest |server - reference| allowed for the sampled token's log-probability and the top-20 confidence.
# In-process engine: 5e-3, twice the largest measured over 72 sampled tokens (1.05e-3 log-prob, 2.29e-3
# confidence): ttc's own llama.cpp context is laid out otherwise than llama-cpp-python's (its f16 KV cache,
# one decode per token), which moves this random model's large logits. llama-cpp-python's own Llama with the
# server's settings, one token at a time: 1e-5 (measured 8.3e-7), so what ttc reads off the stream is exact.
IN_PROCESS, SAME_SETTINGS = 5e-3, 1e-5


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_ascii_gguf(tmp_path_factory.mktemp("stats") / "ascii-no-eos.gguf", seed=2, eos=False)


@pytest.fixture(scope="module")
def server(model):
    """Started with --interrupt_requests False, so that a request sent after a kill does not itself cut the
    abandoned generation short (the server's default): only the closed stream can have stopped it."""
    s = Server(model, args=("--interrupt_requests", "False")).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def engines(model, server):
    local, remote = LlamaEngine(str(model), n_threads=1), OpenAIEngine(server.url, concurrency=2)
    yield local, remote
    remote.close()
    local.close()


def reference(local: LlamaEngine, text: str) -> tuple[np.ndarray, np.ndarray]:
    """In-process (log P(sampled token), -(1/K) * sum of the top-K log-probs) for each token of `text` after
    PROMPT. The vocabulary is byte-level, so the text's tokens are the sampled ones."""
    tokens = local.tokenize(text, add_bos=False, special=False)
    vocab = list(range(int(local.info.metadata.get("llama.vocab_size", 0)) or 260))
    suffix = local.tokenize(PROMPT[-1], add_bos=False) + tokens  # position j predicts token j
    rows = local.logprobs_at(PROMPT[:-1], [suffix], [list(range(len(tokens)))], vocab)[0]
    lp = rows[np.arange(len(tokens)), tokens]
    conf = -np.sort(rows, axis=1)[:, ::-1][:, :K].mean(axis=1)
    return lp, conf


def same_settings(model, text: str) -> tuple[np.ndarray, np.ndarray]:
    """`reference` from llama-cpp-python's Llama as the server runs it (its defaults, one token at a time)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=2048, n_threads=1, logits_all=True, verbose=False)
    llm.eval(llm.tokenize(PROMPT.encode(), add_bos=True, special=True))
    rows = []
    for t in llm.tokenize(text.encode(), add_bos=False, special=False):
        rows.append(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64))
        llm.eval([t])
    rows = np.array(rows)
    rows -= rows.max(axis=1, keepdims=True)
    rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
    tokens = list(text.encode())
    return rows[np.arange(len(tokens)), tokens], -np.sort(rows, axis=1)[:, ::-1][:, :K].mean(axis=1)


def test_streamed_statistics_agree_with_the_in_process_logits(engines, model):
    local, remote = engines
    params = SamplingParams(temperature=0.8, max_tokens=24, seed=5, stats_top_k=32)
    worst = {"in-process": [0.0, 0.0], "same settings": [0.0, 0.0]}
    for c in remote.sample(PROMPT, 3, params):
        s = c.stats
        assert s.approximate and s.top_k == K and len(s.logprob) == len(s.confidence) == c.n_generated == 24
        assert np.isnan(s.certainty).all() and c.finish_reason == "length"
        for name, (lp, conf) in (
            ("in-process", reference(local, c.text)),
            ("same settings", same_settings(model, c.text)),
        ):
            w = worst[name]
            w[0], w[1] = (
                max(w[0], float(np.abs(s.logprob - lp).max())),
                max(w[1], float(np.abs(s.confidence - conf).max())),
            )
    for name, (lp, conf) in worst.items():
        print(f"largest |server - {name}|: logprob {lp:.2e}, top-{K} confidence {conf:.2e}")
    assert max(worst["in-process"]) <= IN_PROCESS and max(worst["same settings"]) <= SAME_SETTINGS


class StopAfter(Watch):
    def __init__(self, t: int, then=None):
        self.t, self.then, self.steps = t, then, 0

    def step(self, index, stats):
        self.steps += 1
        if self.steps == self.t and self.then is not None:
            self.then()
        return self.steps < self.t


def test_a_killed_stream_is_counted_and_the_server_stops_generating(engines):
    _, remote = engines
    long = SamplingParams(temperature=0.0, max_tokens=1500, stats_top_k=K)
    t0 = time.perf_counter()
    full = remote.sample(PROMPT, 1, long)[0]  # the whole continuation, streamed, as a yardstick
    t_full = time.perf_counter() - t0
    assert full.finish_reason == "length" and full.n_generated == 1500  # the model has no EOS: it runs on
    before = remote.usage.snapshot()
    killed = remote.sample(PROMPT, 1, long, StopAfter(3))[0]
    t1 = time.perf_counter()
    remote.sample("x", 1, SamplingParams(temperature=0.0, max_tokens=1))  # waits while the server is busy
    t_after = time.perf_counter() - t1
    spent = remote.usage - before
    assert (killed.finish_reason, killed.n_generated, len(killed.stats.logprob)) == ("killed", 3, 3)
    assert killed.text == full.text[: len(killed.text)] and len(killed.text) == 3  # greedy: the same tokens
    assert spent.generated_tokens == 3 + 1 and spent.decode_calls == 2
    print(f"full stream {t_full:.2f} s; a request right after a kill at 3 tokens answered in {t_after:.3f} s")
    assert t_after < t_full / 4  # had the server gone on, the request would have waited most of t_full


class AskMidStream(Watch):
    """At the third token, sends the server another request (as another client would) and carries on."""

    def __init__(self, engine: OpenAIEngine):
        self.engine, self.steps = engine, 0

    def step(self, index, stats):
        self.steps += 1
        if self.steps == 3:
            self.engine.tokenize("another request")  # llama-cpp-python interrupts the stream to answer it
        return True


def test_a_request_that_interrupts_a_stream_is_one_clean_line(model):
    server = Server(model).start()  # the server's default: a new request interrupts a stream
    try:
        remote = OpenAIEngine(server.url)
        params = SamplingParams(temperature=0.0, max_tokens=400, stats_top_k=K)
        with pytest.raises(TTCRuntimeError, match="--interrupt_requests False") as e:
            remote.sample(PROMPT, 1, params, AskMidStream(remote))
        assert "\n" not in str(e.value) and remote.client.where in str(e.value)
        remote.close()
    finally:
        server.stop()
