"""Token statistics and the Watch over HTTP, on fake servers that stream (server-sent events) as the dialects'
documentation says: vLLM's legacy log-probs keyed "token_id:N" with stop_reason and a usage event, llama-server's
native /completion stream with completion_probabilities and stop_type, and text-keyed entries that merge
(llama-cpp-python, SGLang). Invariants: the statistics are the top-k ones of what was streamed; a Watch that says
stop closes the stream (the fake server sees the client go and sends no more) and the tokens received are
counted; a server that streams no log-probabilities is one line naming it and what is missing. The same against
llama-cpp-python's real server is in test_openai_stats_server.py.
"""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
from conftest import JSONHandler, LoopbackServer

from ttc.engine.base import SamplingParams, Watch, derive_seed
from ttc.engine.openai import OpenAIEngine
from ttc.engine.openai.stream import top_confidence
from ttc.errors import TTCRuntimeError

pytest.importorskip("httpx")


class StreamFake(LoopbackServer):
    """A threaded HTTP server: `handler(path, body)` returns (status, json) or a list of events to stream
    (each a dict, sent as `data: {...}` with `delay` seconds between them, then `data: [DONE]`)."""

    def __init__(self, handler, delay: float = 0.0):
        self.calls: list[tuple[str, dict]] = []
        self.sent: list[int] = []  # events written, per streamed request
        self.gone = threading.Event()  # a client closed a stream before its end
        outer = self

        class H(JSONHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self._answer({})

            def do_POST(self):
                self._answer(self.body())

            def _answer(self, body):
                outer.calls.append((self.path, body))
                out = handler(self.path, body)
                if isinstance(out, list):
                    return self._stream(out)
                self.send_json(out[0], out[1])

            def _stream(self, events):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                n = 0
                try:
                    for e in [*events, "[DONE]"]:
                        payload = e if isinstance(e, str) else json.dumps(e)
                        self.wfile.write(f"data: {payload}\n\n".encode())
                        self.wfile.flush()
                        n += 1
                        time.sleep(delay)
                except (BrokenPipeError, ConnectionResetError):
                    outer.gone.set()
                outer.sent.append(n)
                self.close_connection = True

        self.serve(H)


def card(owner: str):
    return 200, {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": owner}]}


def legacy_event(text: str, chosen: float, top: dict, token: str = "t") -> dict:
    logprobs = {"tokens": [token], "token_logprobs": [chosen], "top_logprobs": [top]}
    return {"choices": [{"index": 0, "text": text, "finish_reason": None, "logprobs": logprobs}]}


def rows_for(seed: int, n: int, k: int) -> list[tuple[float, dict]]:
    """n tokens of made-up distributions: (sampled log-prob, top entries keyed token_id:N, k + 1 of them)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lp = np.sort(np.log(rng.dirichlet(np.ones(40))))[::-1][: k + 1]
        top = {f"token_id:{i}": float(v) for i, v in enumerate(lp)}
        out.append((float(lp[-1]), top))  # the sampled token is outside the top k: its entry is the k+1-th
    return out


def test_vllm_stream_gives_top_k_statistics_stop_reason_and_usage():
    k_asked, k = 32, 20  # vLLM refuses more than its --max-logprobs, 20 by default

    def handler(path, body):
        if path == "/v1/models":
            return card("vllm")
        rows = rows_for(body["seed"], 5, k)
        events = [legacy_event(f"w{i} ", lp, top, f"token_id:{i}") for i, (lp, top) in enumerate(rows)]
        events.append({"choices": [{"index": 0, "text": "", "finish_reason": "stop", "stop_reason": "##"}]})
        events.append({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 6}})
        return events

    fake = StreamFake(handler)
    try:
        eng = OpenAIEngine(fake.url)
        params = SamplingParams(max_tokens=9, stop=("##",), include_stop=True, seed=4, stats_top_k=k_asked)
        comps = eng.sample("p", 3, params)
        bodies = [b for p, b in fake.calls if p == "/v1/completions"]
        assert sorted(b["seed"] for b in bodies) == sorted(derive_seed(4, i) for i in range(3))
        for b in bodies:
            assert b["stream"] and b["logprobs"] == k and b["return_tokens_as_token_ids"] and b["stop"] == ["##"]
            assert b["stream_options"] == {"include_usage": True} and "n" not in b
        for i, c in enumerate(comps):
            rows = rows_for(derive_seed(4, i), 5, k)
            assert (c.text, c.finish_reason, c.stop) == ("w0 w1 w2 w3 w4 ##", "stop", "##")
            assert c.stats.approximate and c.stats.top_k == k and np.isnan(c.stats.certainty).all()
            want = [-sum(sorted(top.values(), reverse=True)[:k]) / k for _, top in rows]
            assert c.stats.confidence == pytest.approx(want, rel=1e-6)
            assert c.stats.logprob == pytest.approx([lp for lp, _ in rows], rel=1e-6)
            assert c.n_generated == 6  # the server's usage (a token past the stop string) over the 5 received
        assert (eng.usage.generated_tokens, eng.usage.prompt_tokens, eng.usage.decode_calls) == (18, 21, 3)
        eng.close()
    finally:
        fake.close()


def test_llama_server_native_stream_reads_completion_probabilities_and_stop_type():
    def handler(path, body):
        if path == "/v1/models":
            return card("llamacpp")
        if path == "/props":
            return 200, {}
        assert path == "/completion" and body["n_probs"] == 3 and body["stop"] == ["\n"] and body["stream"]
        ev = []
        for i in range(4):
            top = [{"id": j, "token": f"x{j}", "logprob": -0.5 * (j + i)} for j in range(3)]
            top.append({"id": 1, "token": "x1", "logprob": -9.0})  # a repeated id counts once (its first value)
            probs = [{"id": i, "token": str(i), "logprob": -0.5 * i, "top_logprobs": top}]
            ev.append({"content": str(i), "tokens": [i], "stop": False, "completion_probabilities": probs})
        ev.append({"content": "", "stop": True, "stop_type": "word", "stopping_word": "\n", "tokens_predicted": 5,
                   "tokens_evaluated": 9, "timings": {"prompt_n": 4}})  # fmt: skip
        return ev

    fake = StreamFake(handler)
    try:
        eng = OpenAIEngine(fake.url)
        c = eng.sample("p", 1, SamplingParams(max_tokens=8, stop=("\n",), stats_top_k=3))[0]
        assert (c.text, c.finish_reason, c.stop, c.n_generated) == ("0123", "stop", "\n", 5)
        want = [-sum(-0.5 * (j + i) for j in range(3)) / 3 for i in range(4)]
        assert c.stats.confidence == pytest.approx(want) and c.stats.logprob == pytest.approx([0, -0.5, -1, -1.5])
        assert (eng.usage.prompt_tokens, eng.usage.generated_tokens) == (4, 5)
        eng.close()
    finally:
        fake.close()


def test_text_keyed_entries_that_merge_count_at_the_smallest_value_received():
    assert top_confidence([-1.0, -2.0, -3.0], 3) == pytest.approx(2.0)
    assert top_confidence([-1.0, -2.0], 3) == pytest.approx((1 + 2 + 2) / 3)  # one entry lost to a merge
    assert top_confidence([-0.5, -1.0, -2.0, -7.0], 3) == pytest.approx(3.5 / 3)  # the sampled k+1-th drops off
    assert math.isnan(top_confidence([], 3))


class KillAfter(Watch):
    def __init__(self, t: int):
        self.t, self.seen, self.done = t, [], {}

    def step(self, index, stats):
        self.seen.append((index, len(stats.confidence)))
        return len(stats.confidence) < self.t

    def finished(self, index, completion):
        self.done[index] = completion


def test_a_watch_that_says_stop_closes_the_stream_and_the_tokens_received_are_counted():
    """llama-cpp-python's dialect: no stop strings sent (ttc finds them), no usage: the received tokens count."""
    n_events = 200

    def handler(path, body):
        if path == "/v1/models":
            return card("me")
        if path == "/extras/tokenize":
            return 200, {"tokens": [1] + [2] * len(body["input"])}
        assert "stop" not in body and "stream_options" not in body
        top = {"a": -0.1, "b": -2.5}
        return [legacy_event("a", -0.1, top) for _ in range(n_events)] + [
            {"choices": [{"index": 0, "text": "", "finish_reason": "length", "logprobs": None}]}
        ]

    fake = StreamFake(handler, delay=0.01)
    try:
        eng = OpenAIEngine(fake.url)
        watch = KillAfter(5)
        c = eng.sample("pq", 1, SamplingParams(max_tokens=n_events, stats_top_k=2), watch)[0]
        assert (c.finish_reason, c.n_generated, len(c.stats.logprob), c.text) == ("killed", 5, 5, "aaaaa")
        assert watch.seen == [(0, i) for i in range(1, 6)] and watch.done[0] is c
        assert eng.usage.generated_tokens == 5 and eng.usage.prompt_tokens == 3  # BOS + "pq", from the tokenizer
        assert fake.gone.wait(10) and fake.sent[-1] < n_events  # the server saw the client go, and stopped
        c = eng.sample("pq", 1, SamplingParams(max_tokens=n_events, stats_top_k=2, stop=("aaa",)))[0]
        assert (c.text, c.finish_reason, c.stop, c.n_generated) == ("", "stop", "aaa", 3)  # found in the text
        eng.close()
    finally:
        fake.close()


def test_a_server_that_streams_no_log_probabilities_is_one_line_naming_it():
    def handler(path, body):
        if path == "/v1/models":
            return card("vllm")
        return [{"choices": [{"index": 0, "text": "hi", "finish_reason": None, "logprobs": None}]}]

    fake = StreamFake(handler)
    try:
        eng = OpenAIEngine(fake.url)
        with pytest.raises(TTCRuntimeError) as e:
            eng.sample("p", 2, SamplingParams(max_tokens=4, stats_top_k=20))
        msg = str(e.value)
        assert e.value.exit_code == 1 and "\n" not in msg
        assert (
            fake.url.rsplit("/v1", 1)[0] in msg and "without log-probabilities (logprobs=20 on /v1/completions)" in msg
        )
        eng.close()
    finally:
        fake.close()
