"""`ttc serve` under faults, a real server on 127.0.0.1: 200 malformed, oversized and unauthorised requests
each get a 4xx with an OpenAI error body and the server goes on answering; a client killed mid-request
leaves no sequence running and the KV cache at its idle level; SIGTERM shuts down without losing an answer
already being given; binding beyond loopback without a key warns."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from serve_helpers import REPO, Server  # noqa: E402

KEY = "fuzz-key"
GOOD_CHAT = {"model": "ttc/greedy", "messages": [{"role": "user", "content": "12+7"}]}
GOOD_COMP = {"model": "ttc/greedy", "prompt": "12+7"}


@pytest.fixture(scope="module")
def server():
    s = Server("--preset", "tiny-arith", "--max-request-bytes", "65536", key=KEY)
    yield s
    s.stop()


def _bad_bodies() -> list[tuple[str, object]]:
    """(endpoint, body) pairs that must be refused: a body is raw bytes or a JSON value."""
    chat, comp = "/v1/chat/completions", "/v1/completions"
    out: list[tuple[str, object]] = []
    for raw in (b"", b"{", b"[]", b"null", b"1", b'"x"', b'{"model":', b"\xff\xfe", b"{'model': 'ttc'}", b"NaN"):
        out += [(chat, raw), (comp, raw)]
    fields = [
        {"model": None}, {"model": 5}, {"model": ["ttc"]}, {"model": "gpt-4"}, {"model": "ttc/nope"},
        {"model": "ttc/greedy@x"}, {"model": "ttc/greedy@0"}, {"model": "ttc/greedy@-1"}, {"model": "ttc/beam:width"},
        {"temperature": -1}, {"temperature": 3}, {"temperature": "hot"}, {"temperature": True},
        {"top_p": 0}, {"top_p": 2}, {"top_k": -5}, {"n": 0}, {"n": 17}, {"n": 1.5}, {"n": "2"},
        {"max_tokens": 0}, {"max_tokens": -5}, {"max_tokens": "10"}, {"max_tokens": 10**7}, {"seed": "x"},
        {"seed": 1.5}, {"stop": 5}, {"stop": [1]}, {"stop": ["a"] * 5}, {"stop": ""}, {"stream": "yes"},
        {"stream_options": {"x": 1}}, {"ttc": "greedy"}, {"ttc": {"bogus": 1}}, {"ttc": {"budget": 0}},
        {"ttc": {"budget": "8"}}, {"ttc": {"budget": 10**9}}, {"ttc": {"strategy": 5}}, {"ttc": {"strategy": "nope"}},
        {"ttc": {"opts": [1]}}, {"ttc": {"opts": {"width": True}}}, {"ttc": {"think_budget": -1}},
        {"ttc": {"strategy": "beam", "opts": {"width": 0}}}, {"logprobs": True}, {"logit_bias": {"1": 5}},
        {"presence_penalty": 1}, {"user": 5}, {"unknown_field": 1}, {"model": "ttc/greedy@4", "ttc": {"budget": 8}},
        {"model": "ttc/majority", "ttc": {"strategy": "greedy"}}, {"ignore_eos": True}, {"ignore_eos": "no"},
    ]  # fmt: skip
    for f in fields:
        out += [(chat, {**GOOD_CHAT, **f}), (comp, {**GOOD_COMP, **f})]
    chat_only = [
        {"messages": None}, {"messages": []}, {"messages": "12+7"}, {"messages": [{"role": "bob", "content": "x"}]},
        {"messages": [{"role": "user", "content": 5}]}, {"messages": [{"role": "user", "content": ""}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "1+2"}]},
        {"messages": [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}]}, {"messages": [5]},
        {"tools": [{"type": "function", "function": {"name": "f"}}]}, {"tool_choice": "auto"},
        {"response_format": {"type": "json_object"}}, {"top_logprobs": 2}, {"model": "tiny-arith-policy.gguf"},
        {"prompt": "12+7"}, {"max_completion_tokens": 0}, {"messages": [{"role": "user", "content": "9" * 60000}]},
    ]  # fmt: skip
    out += [(chat, {**GOOD_CHAT, **f}) for f in chat_only]
    comp_only = [
        {"prompt": None}, {"prompt": 5}, {"prompt": []}, {"prompt": [1, 2]}, {"prompt": ""}, {"prompt": ["a"] * 17},
        {"echo": True}, {"best_of": 3}, {"suffix": "x"}, {"logprobs": 2}, {"messages": GOOD_CHAT["messages"]},
        {"model": "tiny-arith-policy.gguf", "ttc": {"budget": 4}}, {"prompt": "1+" * 20000},
    ]  # fmt: skip
    out += [(comp, {**GOOD_COMP, **f}) for f in comp_only]
    return out


def fuzz_list() -> list[tuple[str, str, object, dict]]:
    """(method, path, body, headers): 200 requests that must each get a 4xx."""
    auth = {"Authorization": f"Bearer {KEY}"}
    out = [("POST", path, body, auth) for path, body in _bad_bodies()]
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}, {"Authorization": "Basic eA=="},
                    {"Authorization": "Bearer"}):  # fmt: skip
        out += [("POST", "/v1/chat/completions", GOOD_CHAT, headers), ("POST", "/v1/completions", GOOD_COMP, headers),
                ("GET", "/v1/models", None, headers), ("GET", "/health", None, headers)]  # fmt: skip
    out += [("POST", "/v1/chat/completions", b"{" + b" " * 70000 + b"}", auth)]  # over --max-request-bytes
    out += [("GET", "/v1/chat/completions", None, auth), ("POST", "/v1/models", {}, auth), ("GET", "/v2", None, auth),
            ("PUT", "/v1/completions", GOOD_COMP, auth), ("POST", "/tokenize", {"prompt": 5}, auth),
            ("POST", "/detokenize", {"tokens": [-1]}, auth), ("DELETE", "/health", None, auth)]  # fmt: skip
    while len(out) < 200:  # pad with unauthorised copies of good requests, alternating the endpoint
        out.append(("POST", ["/v1/chat/completions", "/v1/completions"][len(out) % 2], GOOD_CHAT, {}))
    return out[:200]


def test_200_bad_requests_each_get_a_4xx_error_body_and_the_server_keeps_serving(server):
    cases = fuzz_list()
    assert len(cases) == 200
    failures = []
    with httpx.Client(base_url=server.base, timeout=60) as c:
        for method, path, body, headers in cases:
            data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
            r = c.request(method, path, content=data, headers={"Content-Type": "application/json", **headers})
            try:
                err = r.json()["error"]
                ok = 400 <= r.status_code < 500 and set(err) == {"message", "type", "param", "code"} and err["message"]
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                failures.append((method, path, str(body)[:80], r.status_code, r.text[:200]))
        assert not failures, failures[:5]
        r = c.post("/v1/chat/completions", json=GOOD_CHAT, headers=server.headers)
    assert r.status_code == 200 and "\\boxed{19}" in r.json()["choices"][0]["message"]["content"]
    assert server.proc.poll() is None


def _wait(pred, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_a_client_killed_mid_request_leaves_no_sequence_running_and_kv_at_idle(server):
    idle = server.health()
    assert idle["running_sequences"] == 0
    body = {"model": "ttc/majority@2048", "messages": [{"role": "user", "content": "37+48-19"}]}
    client = subprocess.Popen([sys.executable, "-c", (
        "import httpx, sys, json; httpx.post(sys.argv[1], content=sys.argv[2], timeout=600, "
        f"headers={{'Authorization': 'Bearer {KEY}', 'Content-Type': 'application/json'}})"
    ), server.base + "/v1/chat/completions", json.dumps(body)], cwd=REPO)  # fmt: skip
    try:
        assert _wait(lambda: server.health()["running_sequences"] > 0), server.stderr()
    finally:
        client.kill()
        client.wait()
    assert _wait(lambda: (h := server.health())["running_sequences"] == 0 and h["queued_calls"] == 0)
    assert _wait(lambda: server.health()["kv_cells"] == idle["kv_cells"])
    assert "went away" in server.stderr()
    r = httpx.post(server.base + "/v1/completions", json=GOOD_COMP, headers=server.headers, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["text"]


def test_sigterm_finishes_the_answer_being_given_then_exits_cleanly_and_binding_wide_warns():
    s = Server("--preset", "tiny-arith", host="0.0.0.0")
    try:
        assert "without an API key" in s.stderr()
        got: dict = {}
        body = {"model": "ttc/majority@256", "messages": [{"role": "user", "content": "37+48-19"}]}

        def ask():
            r = httpx.post(s.base + "/v1/chat/completions", json=body, timeout=300)
            got.update(status=r.status_code, body=r.json())

        t = threading.Thread(target=ask)
        t.start()
        assert _wait(lambda: s.health()["running_sequences"] > 0)
        s.proc.send_signal(signal.SIGTERM)
        t.join(300)
        assert got["status"] == 200 and len(got["body"]["ttc"]["results"][0]["candidates"]) == 256
        assert s.proc.wait(120) == 0 and "ttc serve: stopped" in s.stderr()
    finally:
        s.stop()
