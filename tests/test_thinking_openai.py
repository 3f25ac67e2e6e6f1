"""Thinking budgets through `--backend openai`: the tiny Qwen3-form thinking model served by llama-cpp-python's
own server (which has no reasoning budget), so ttc enforces the budget itself in phases."""

from __future__ import annotations

import json

import pytest
from conftest import run_ttc
from test_openai_backend import Server
from thinking_models import ANSWER, write_preset, write_thinking_gguf

from ttc.solve import ModelOptions, Solver
from ttc.thinking import ThinkOptions


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("think-oa")
    model = write_thinking_gguf(d / "qwen3.gguf", "qwen3", q=0.05)
    server = Server(model).start()
    preset = write_preset(
        d, model, "qwen3", extra=f"backend:\n  kind: openai\n  base_url: {server.url}\n  concurrency: 4\n"
    )
    yield preset, server
    server.stop()


@pytest.fixture(scope="module")
def remote(served):
    s = Solver(ModelOptions(preset=str(served[0])))
    yield s
    s.close()


def test_detection_works_from_the_servers_tokenizer(remote):
    spec = remote.think_spec
    assert (spec.start, spec.end, spec.switch) == ("<think>", "</think>", "enable_thinking")


def test_every_trace_through_the_server_keeps_its_think_budget_and_answers(remote):
    r = remote.solve("1+1", "majority", 8, seed=4, think_budget=12)
    assert r.answer == "42"
    assert any(c.think["cut"] for c in r.candidates)
    for c in r.candidates:
        assert c.think["tokens"] <= 12
        assert c.thinking == "7" * c.think["tokens"]
        assert c.text == ANSWER and "</think>" not in c.text and "Time is up" not in c.text
        if c.think["cut"]:
            assert c.think["tokens"] == 12


def test_think_min_through_the_server_forces_the_continuation_word(remote):
    r = remote.solve("1+1", "majority", 4, seed=6, thinking=ThinkOptions(budget=60, min_tokens=30))
    assert r.answer == "42"
    for c in r.candidates:
        assert 30 <= c.think["tokens"] <= 60
        assert c.thinking.count("Wait") == c.think["continuations"]


def test_solve_backend_openai_with_a_think_budget_from_the_command_line(served):
    r = run_ttc("solve", "1+1", "-p", str(served[0]), "--think-budget", "10", "--budget", "4", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["answer"] == "42"
    assert all(c["think"]["tokens"] <= 10 for c in rec["candidates"])


def test_confidence_strategies_over_thinking_traces_on_a_server_are_refused_in_one_line(served):
    r = run_ttc("solve", "1+1", "-p", str(served[0]), "--think-budget", "10", "-s", "deepconf")
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and "in-process" in err[-1] and "Traceback" not in r.stderr.decode()


def test_ttc_serve_returns_the_thinking_as_reasoning_content_never_in_content(tmp_path):
    openai = pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    from serve_helpers import Server as TTCServer

    model = write_thinking_gguf(tmp_path / "qwen3.gguf", "qwen3", q=0.05)
    preset = write_preset(tmp_path, model, "qwen3")
    server = TTCServer("--preset", str(preset))
    try:
        client = openai.OpenAI(base_url=server.base + "/v1", api_key="none", max_retries=0, timeout=120)
        r = client.chat.completions.create(
            model="ttc/majority@4", messages=[{"role": "user", "content": "1+1"}], seed=2,
            extra_body={"ttc": {"think_budget": 8}},
        )  # fmt: skip
        message = r.choices[0].message
        assert "42" in message.content and "7" not in message.content and "</think>" not in message.content
        reasoning = getattr(message, "reasoning_content", None) or message.model_extra.get("reasoning_content")
        assert reasoning and set(reasoning) == {"7"} and len(reasoning) <= 8
        cands = r.model_extra["ttc"]["results"][0]["candidates"]
        assert all(c["think"]["tokens"] <= 8 for c in cands)
    finally:
        server.stop()
