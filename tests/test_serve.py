"""`ttc serve` against the real `openai` client on the built-in pair (preset tiny-arith), a real server on
127.0.0.1: the answers, the fields, the accounting, and ttc as its own client."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from serve_helpers import REPO, Server  # noqa: E402

from ttc.solve import Solver  # noqa: E402

KEY = "test-key-123"
PROBLEMS = ["37+48-19", "12+7", "91-45+3", "5+8+13"]


@pytest.fixture(scope="module")
def server():
    s = Server("--preset", "tiny-arith", key=KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=KEY, max_retries=0, timeout=120)


def ttc(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "TTC_API_KEY": KEY}
    return subprocess.run(
        [sys.executable, "-m", "ttc", *args], input=stdin, capture_output=True, text=True, env=env, cwd=REPO
    )


def test_chat_completion_is_the_chosen_solution_with_every_token_counted(client):
    r = client.chat.completions.create(
        model="ttc/majority@8", messages=[{"role": "user", "content": "37+48-19"}], seed=3
    )
    extra = r.model_extra["ttc"]
    result = extra["results"][0]
    assert result["strategy"] == "majority" and result["budget"] == 8 and len(result["candidates"]) == 8
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content in [c["text"] for c in result["candidates"] if c["answer"] == result["answer"]]
    assert (
        r.usage.completion_tokens
        == sum(c["tokens"] for c in result["candidates"])
        == extra["spent"]["tokens_generated"]
    )
    assert r.usage.prompt_tokens == result["spent"]["prompt_tokens"] + result["spent"]["prm_tokens"] > 0
    assert getattr(r.choices[0].message, "reasoning_content", None) is None  # not a thinking model


def test_streamed_chat_and_completions_carry_the_same_answer_as_unstreamed(client):
    args = dict(model="ttc/best-of-n@4", seed=5)
    whole = client.chat.completions.create(messages=[{"role": "user", "content": "91-45+3"}], **args)
    stream = client.chat.completions.create(
        messages=[{"role": "user", "content": "91-45+3"}], stream=True, stream_options={"include_usage": True}, **args
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    comp = client.completions.create(prompt="91-45+3", **args)
    streamed = "".join(c.choices[0].text for c in client.completions.create(prompt="91-45+3", stream=True, **args))
    assert comp.choices[0].text == streamed == whole.choices[0].message.content


def test_extra_body_and_model_names_choose_strategy_and_budget(client):
    r = client.chat.completions.create(
        model="ttc", messages=[{"role": "user", "content": "12+7"}],
        extra_body={"ttc": {"strategy": "weighted-best-of-n", "budget": 4}},
    )  # fmt: skip
    res = r.model_extra["ttc"]["results"][0]
    assert (res["strategy"], res["budget"], res["prm"]) == ("weighted-best-of-n", 4, "tiny-arith-prm.gguf")
    for model, strategy, budget in [("ttc/greedy", "greedy", 16), ("ttc/beam:width=2@4", "beam:width=2", 4)]:
        res = client.completions.create(model=model, prompt="12+7").model_extra["ttc"]["results"][0]
        assert (res["strategy"], res["budget"]) == (strategy, budget)
    res = client.completions.create(model="ttc", prompt="12+7").model_extra["ttc"]["results"][0]
    assert res["strategy"] == "auto"  # the preset's default (it has a calibrated policy)
    names = {m.id for m in client.models.list()}
    assert {"ttc", "ttc/greedy", "ttc/auto", "tiny-arith-policy.gguf"} <= names


def test_n_is_that_many_independent_runs_with_seeds_seed_plus_i(client):
    msgs = [{"role": "user", "content": "5+8+13"}]
    r = client.chat.completions.create(model="ttc/majority@2", messages=msgs, n=3, seed=10)
    seeds = [res["seed"] for res in r.model_extra["ttc"]["results"]]
    assert seeds == [10, 11, 12] and len(r.choices) == 3
    for i in range(3):
        one = client.chat.completions.create(model="ttc/majority@2", messages=msgs, seed=10 + i)
        assert one.choices[0].message.content == r.choices[i].message.content
    assert r.usage.completion_tokens == sum(x["spent"]["tokens_generated"] for x in r.model_extra["ttc"]["results"])


def test_greedy_through_serve_equals_ttc_solve_greedy(client):
    proc = ttc("solve", "-", "--strategy", "greedy", "--json", "--preset", "tiny-arith", stdin="\n".join(PROBLEMS))
    assert proc.returncode == 0, proc.stderr
    local = [json.loads(line) for line in proc.stdout.splitlines()]
    for problem, rec in zip(PROBLEMS, local):
        r = client.chat.completions.create(model="ttc/greedy", messages=[{"role": "user", "content": problem}])
        assert r.choices[0].message.content == rec["candidates"][0]["text"]
        assert r.model_extra["ttc"]["results"][0]["answer"] == rec["answer"]


def test_ttc_solve_with_backend_openai_runs_against_ttc_serve(server):
    local = ttc("solve", "--strategy", "greedy", "--preset", "tiny-arith", *PROBLEMS[:1])
    remote = ttc("solve", "--backend", "openai", "--base-url", server.base + "/v1", "--strategy", "greedy",
                 "--preset", "tiny-arith", PROBLEMS[0])  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout and remote.stdout.strip()
    voted = ttc("solve", "--backend", "openai", "--base-url", server.base + "/v1", "--strategy",
                "weighted-best-of-n", "--budget", "4", "--json", "--preset", "tiny-arith", PROBLEMS[1])  # fmt: skip
    assert voted.returncode == 0, voted.stderr
    assert len(json.loads(voted.stdout)["candidates"]) == 4


def test_plain_policy_completions_say_why_they_stopped(client):
    r = client.completions.create(
        model="tiny-arith-policy.gguf", prompt="Problem: 12+7\nSolution:\n", max_tokens=40, temperature=0,
        stop=["\n"], n=2,
    )  # fmt: skip
    assert [c.text for c in r.choices] == ["12+7=19"] * 2  # greedy: every choice alike
    assert all(c.finish_reason == "stop" and c.model_extra["stop_reason"] == "\n" for c in r.choices)
    assert r.usage.completion_tokens >= 2 * len("12+7=19")


def test_fields_ttc_cannot_honour_get_a_400_naming_them(client, server):
    msgs = [{"role": "user", "content": "1+2"}]
    cases = [
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"extra_body": {"foo": 1}}, "foo"),
        ({"extra_body": {"ttc": {"think_budget": 64}}}, "ttc.think_budget"),
        ({"messages": [{"role": "system", "content": "be nice"}, *msgs]}, "messages"),
        ({"extra_body": {"ttc": {"budget": 10**9}}}, "ttc.budget"),
    ]
    takes_think = "think_budget" in inspect.signature(Solver.solve).parameters
    for extra, param in cases:
        if param == "ttc.think_budget" and takes_think:
            continue
        kwargs = {"model": "ttc/greedy", "messages": msgs, **extra}
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(**kwargs)
        assert e.value.status_code == 400 and e.value.body["param"] == param, (extra, e.value.body)
        assert e.value.body["type"] == "invalid_request_error" and param.split(".")[-1] in e.value.body["message"]


def test_concurrent_requests_share_batches_and_answer_as_one_at_a_time(client, server):
    def ask(seed: int) -> str:
        r = client.chat.completions.create(
            model="ttc/majority@8", messages=[{"role": "user", "content": PROBLEMS[seed % 4]}], seed=seed
        )
        return r.choices[0].message.content + "|" + json.dumps(r.model_extra["ttc"]["results"][0]["candidates"])

    alone = [ask(s) for s in range(8)]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, range(8)))
    assert together == alone
    assert max(calls for calls, _ in server.health()["batches"]) > 1  # some requests shared a decode loop


def test_bearer_key_is_required(server):
    body = {"model": "ttc/greedy", "prompt": "1+2"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(server.base + "/v1/completions", json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(server.base + "/v1/completions", json=body, headers=server.headers, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["text"]
