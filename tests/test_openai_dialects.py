"""The OpenAI-compatible backend against the dialects of other servers, on a fake server that answers as their
documentation says (vLLM's stop_reason and n, SGLang's matched_stop, llama-server's native stop_type and
id-keyed log-probs, newer llama-server's n with one-choice usage), plus retries, timeouts, per-thread usage,
and URL and settings parsing. The real-server tests are in test_openai_backend.py.
"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import JSONHandler, LoopbackServer

from ttc.engine.base import SamplingParams
from ttc.engine.openai import OpenAIEngine
from ttc.engine.openai.http import choice_stop, redact, split_base_url, split_count, top_logprobs
from ttc.engine.openai.setup import remote_spec
from ttc.errors import TTCRuntimeError, UsageError
from ttc.presets import BackendConfig, Preset
from ttc.solve import ModelOptions

pytest.importorskip("httpx")


class Fake(LoopbackServer):
    """A threaded HTTP server whose answers come from `handler(path, body) -> (status, json, headers)`."""

    def __init__(self, handler):
        self.calls: list[tuple[str, dict]] = []
        outer = self

        class H(JSONHandler):
            def _answer(self, body):
                outer.calls.append((self.path, body))
                self.send_json(*handler(self.path, body))

            def do_GET(self):
                self._answer({})

            def do_POST(self):
                self._answer(self.body())

        self.serve(H)


def models_card(owner: str, **extra):
    return 200, {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": owner, **extra}]}, None


def test_vllm_dialect_n_in_one_request_stop_reason_and_token_id_log_probs():
    def handler(path, body):
        if path == "/v1/models":
            return models_card("vllm", max_model_len=4096)
        if path == "/tokenize":
            return 200, {"tokens": [1] + [10 + i for i in range(len(body["prompt"]))]}, None
        if "logit_bias" in body:  # raw log-probs, keys "token_id:N": the other asked token is not in the top k
            t = int(next(iter(body["logit_bias"])))
            lps = {"token_id:7": -0.5, f"token_id:{t}": -2.0 - t}
            return 200, {"choices": [{"index": 0, "text": "x", "logprobs": {
                "tokens": [f"token_id:{t}"], "token_logprobs": [-2.0 - t], "top_logprobs": [lps]},
                "finish_reason": "length"}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}, None  # fmt: skip
        n = body.get("n", 1)
        choices = [{"index": i, "text": f"s{i}", "finish_reason": "stop", "stop_reason": "$" if i % 2 else None}
                   for i in range(n)]  # fmt: skip
        return 200, {"choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 4 * n}}, None

    fake = Fake(handler)
    try:
        eng = OpenAIEngine(fake.url)
        assert (eng.kind, eng.info.n_ctx_train) == ("vllm", 4096)
        comps = eng.sample("p", 4, SamplingParams(max_tokens=8, stop=("$",), include_stop=True, seed=2))
        assert [(c.text, c.finish_reason) for c in comps] == [
            ("s0", "eos"),
            ("s1$", "stop"),
            ("s2", "eos"),
            ("s3$", "stop"),
        ]
        gens = [b for p, b in fake.calls if p == "/v1/completions" and "logit_bias" not in b and b.get("n") == 4]
        assert len(gens) == 1 and "min_p" not in gens[0] and "top_k" not in gens[0]  # vLLM's defaults are ttc's
        assert eng.usage.generated_tokens == 16 and sum(c.n_generated for c in comps) == 16
        lp = eng.logprobs_at([1, 2], [[3, 4]], [[-1]], [20, 21])
        assert lp[0].tolist() == [[-22.0, -23.0]]  # each token read by a request biased towards it alone
        scoring = [b for p, b in fake.calls if "logit_bias" in b]
        assert scoring[0]["prompt"] == [1, 2, 3, 4] and scoring[0]["return_tokens_as_token_ids"] is True
        eng.close()
    finally:
        fake.close()


def test_llama_server_dialect_native_stop_type_and_id_keyed_log_probs():
    def handler(path, body):
        if path == "/v1/models":
            return models_card("llamacpp", meta={"n_params": 1234, "n_ctx_train": 512})
        if path == "/props":
            return 200, {"chat_template": "{{ messages }}"}, None
        if path == "/completion":
            assert body["cache_prompt"] and body["top_k"] == 0 and body["min_p"] == 0.0
            return 200, {"content": "12", "stop_type": "word", "stopping_word": "\n", "tokens_predicted": 3,
                         "tokens_evaluated": 9, "timings": {"prompt_n": 2}}, None  # fmt: skip
        if "logit_bias" in body:
            assert body["logit_bias"] == [[5, 100.0], [6, 100.0]]
            top = [{"id": 5, "token": "+", "logprob": -0.1}, {"id": 6, "token": "-", "logprob": -2.4}]
            return 200, {"choices": [{"index": 0, "text": "+", "logprobs": {"content": [
                {"id": 5, "token": "+", "logprob": -0.1, "top_logprobs": top}]}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 4, "completion_tokens": 1}}, None  # fmt: skip
        return 500, {"error": {"code": 500, "message": "Only one completion choice is allowed"}}, None

    fake = Fake(handler)
    try:
        eng = OpenAIEngine(fake.url)
        assert (eng.kind, eng.info.n_params, eng.info.chat_template) == ("llama-server", 1234, "{{ messages }}")
        c = eng.sample("p", 1, SamplingParams(max_tokens=8, stop=("\n",), include_stop=True))[0]
        assert (c.text, c.finish_reason, c.n_generated) == ("12\n", "stop", 3) and eng.usage.prompt_tokens == 2
        assert eng.logprobs_at([1], [[2, 3]], [[-1]], [5, 6])[0].tolist() == [[-0.1, -2.4]]
        assert not eng._uses_n()  # the server refuses n > 1 (HTTP 500, asked once, not retried): separate requests
        assert len([b for p, b in fake.calls if b.get("n") == 2]) == 1
        eng.close()
    finally:
        fake.close()


def test_n_whose_usage_counts_one_choice_is_not_used():
    """Newer llama-server builds answer n, but their usage counts one choice's tokens (seen with the llama.cpp
    vendored in llama-cpp-python 0.3.36): ttc then sends one request per sample, whose counts are right."""

    def handler(path, body):
        if path == "/v1/models":
            return models_card("llamacpp", meta={"n_params": 10, "n_ctx_train": 512})
        if path == "/props":
            return 200, {}, None
        n = int(body.get("n", 1))
        choices = [{"index": i, "text": "ab", "finish_reason": "length"} for i in range(n)]
        return 200, {"choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 2}}, None

    fake = Fake(handler)
    try:
        eng = OpenAIEngine(fake.url)
        out = eng.sample("p", 4, SamplingParams(max_tokens=2, temperature=0.8))
        assert not eng._uses_n() and len(out) == 4
        assert eng.usage.generated_tokens == 8 and eng.usage.decode_calls == 4
        probe = [b for p, b in fake.calls if b.get("n") == 2]
        assert len(probe) == 1 and probe[0]["ignore_eos"] is True and probe[0]["max_tokens"] == 2
        eng.close()
    finally:
        fake.close()


def test_retries_honour_retry_after_then_give_one_line_naming_the_server():
    answers = iter([(429, {"error": "slow down"}, {"Retry-After": "0"}), (503, {}, None), models_card("sglang")])

    fake = Fake(lambda path, body: next(answers, (503, {"error": {"message": "overloaded"}}, None)))
    try:
        eng = OpenAIEngine(fake.url, max_retries=2, backoff_s=0.01, api_key="sk-secret-abc")
        assert eng.kind == "sglang" and len(fake.calls) == 3
        with pytest.raises(TTCRuntimeError) as e:
            eng.sample("p", 1, SamplingParams(max_tokens=4))
        msg = str(e.value)
        assert msg == f"server at {redact(fake.url)} did not answer after 3 tries: HTTP 503: overloaded"
        assert "sk-secret" not in msg
        eng.close()
    finally:
        fake.close()


def test_a_read_timeout_is_not_retried():
    """The server is still working on it: sending it again would only add load."""

    def handler(path, body):
        if path == "/v1/models":
            return models_card("vllm")
        time.sleep(1.0)
        return 200, {"choices": []}, None

    fake = Fake(handler)
    try:
        eng = OpenAIEngine(fake.url, timeout_s=0.3, max_retries=3, backoff_s=0.01)
        with pytest.raises(TTCRuntimeError, match="did not answer POST /completions within 0.3 s; raise"):
            eng.sample("p", 1, SamplingParams(max_tokens=4))
        assert [p for p, _ in fake.calls].count("/v1/completions") == 1
        eng.close()
    finally:
        fake.close()


def test_concurrent_problems_each_see_their_own_spend():
    """ttc bench --concurrency runs problems on threads sharing one engine: usage is counted per thread."""

    def handler(path, body):
        if path == "/v1/models":
            return models_card("vllm")
        time.sleep(0.01)
        n = body.get("n", 1)
        k = int(body["prompt"])  # each choice generates k tokens (fewer when max_tokens cuts it)
        m = min(k, body["max_tokens"])
        reason = "length" if k >= body["max_tokens"] else "stop"
        choices = [{"index": i, "text": "x" * m, "finish_reason": reason} for i in range(n)]
        return 200, {"choices": choices, "usage": {"prompt_tokens": k, "completion_tokens": m * n}}, None

    fake = Fake(handler)
    try:
        eng = OpenAIEngine(fake.url, concurrency=8)
        spent = {}

        def problem(k):
            before = eng.usage.snapshot()
            for _ in range(3):
                eng.sample(str(k), 2, SamplingParams(max_tokens=4))
            spent[k] = eng.usage - before

        threads = [threading.Thread(target=problem, args=(k,)) for k in (1, 2, 3, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k, u in spent.items():
            assert (u.prompt_tokens, u.generated_tokens, u.decode_calls) == (3 * k, 6 * k, 3) and u.wall_s > 0
        eng.close()
    finally:
        fake.close()


def test_a_server_without_log_probs_is_a_clear_error():
    def handler(path, body):
        if path == "/v1/models":
            return models_card("someone")
        if path == "/tokenize":
            return 200, {"tokens": [1, 2]}, None
        return 200, {"choices": [{"index": 0, "text": "+", "finish_reason": "length", "logprobs": None}]}, None

    fake = Fake(handler)
    try:
        eng = OpenAIEngine(fake.url)
        with pytest.raises(TTCRuntimeError, match="returned no log-probabilities"):
            eng.logprobs_at("a", ["b"], [[-1]], [5, 6])
        eng.close()
    finally:
        fake.close()


def test_stop_reasons_of_each_dialect():
    assert choice_stop({"stop_reason": "\n\n"}, "x", ["\n\n"]) == "\n\n"
    assert choice_stop({"stop_reason": 2}, "x", ["\n\n"]) is None  # a stop token id: end of generation
    assert (
        choice_stop({"matched_stop": "$"}, "x", ["$"]) == "$" and choice_stop({"matched_stop": 2}, "x", ["$"]) is None
    )
    # llama-cpp-python: tokens past the text mean a stop string was cut off
    lp = {"tokens": ["a", "b", "$", "c"], "text_offset": [5, 6, 7, 8]}
    assert choice_stop({"logprobs": lp}, "ab", ["?", "$"]) == "$"
    assert choice_stop({"logprobs": {"tokens": ["a", "b"], "text_offset": [5, 6]}}, "ab", ["$"]) is None
    chosen, top = top_logprobs({"logprobs": {"tokens": ["token_id:4"], "token_logprobs": [-1.0],
                                             "top_logprobs": [{"token_id:4": -1.0, "x": -2.0}]}})  # fmt: skip
    assert chosen == (4, -1.0) and top == [(4, -1.0), ("x", -2.0)]
    assert split_count(10, ["aaaa", "a"]) == [7, 3] and split_count(5, ["x"]) == [5]


def test_urls_and_settings():
    assert split_base_url("http://h:8000/v1/") == ("http://h:8000", "http://h:8000/v1")
    assert split_base_url("https://h") == ("https://h", "https://h/v1")
    assert redact("http://user:pw@h:1/v1?key=s") == "http://h:1/v1"
    with pytest.raises(UsageError, match="--base-url"):
        split_base_url("h:8000")
    preset = Preset(name="p", model="policy.gguf", backend=BackendConfig(kind="openai", base_url="http://a/v1"))
    spec = remote_spec(ModelOptions(), preset, "policy", "policy.gguf")
    assert spec.base_url == "http://a/v1" and spec.concurrency == 32 and spec.dialect == "auto"
    plain = Preset(name="p", backend=BackendConfig(kind="openai", base_url="http://a/v1", dialect="plain"))
    assert remote_spec(ModelOptions(), plain, "policy", "x").dialect == "plain"
    with pytest.raises(UsageError, match="backend.dialect must be 'auto' or 'plain', got 'fast'"):
        remote_spec(ModelOptions(), Preset(name="p", backend=BackendConfig(dialect="fast")), "policy", "x")
    assert remote_spec(ModelOptions(backend="llama"), preset, "policy", "x") is None  # flags win
    assert remote_spec(ModelOptions(base_url="http://b/v1"), preset, "policy", "x").base_url == "http://b/v1"
    prm = remote_spec(ModelOptions(), preset, "prm", "prm.gguf")
    assert prm.base_url == "http://a/v1" and prm.require_hint  # the PRM on the policy's server, by its name
    assert remote_spec(ModelOptions(prm_base_url="in-process"), preset, "prm", "prm.gguf") is None
    with pytest.raises(UsageError, match="needs the server's URL"):
        remote_spec(ModelOptions(backend="openai"), Preset(name="p"), "policy", "x")
    with pytest.raises(UsageError, match="backend.kind must be"):
        remote_spec(ModelOptions(), Preset(name="p", backend=BackendConfig(kind="vllm")), "policy", "x")


def test_backend_section_is_validated_strictly(tmp_path):
    from ttc.presets import load_preset

    path = tmp_path / "p.yaml"
    path.write_text("model: x.gguf\nbackend: {kind: openai, base_url: http://h/v1, concurency: 4}\n")
    with pytest.raises(UsageError, match="unknown key 'backend.concurency'.*did you mean 'backend.concurrency'"):
        load_preset(str(path))
    path.write_text("model: x.gguf\nbackend: {kind: openai, max_retries: many}\n")
    with pytest.raises(UsageError, match="'backend.max_retries' must be an integer"):
        load_preset(str(path))
    path.write_text("model: x.gguf\nbackend: {kind: openai, base_url: http://h/v1, timeout_s: 5}\n")
    assert load_preset(str(path)).backend == BackendConfig(kind="openai", base_url="http://h/v1", timeout_s=5.0)
