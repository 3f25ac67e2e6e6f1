"""The vLLM tier: the built-in pair, exported to Hugging Face format, on two real vLLM servers (CPU, float32, on
loopback), started by `python tests/vllm_servers.py up DIR` (.ci/run does it, and stops them in a trap).
Skipped unless TTC_VLLM=DIR names such a folder.

    greedy          equals in-process greedy on 24 held-out problems, text and token counts
    counts          generated tokens are vLLM's usage, and equal the choices' own token counts (return_token_ids);
                    prompt tokens are less the prefix cache's hits
    PRM             one request per solution (prompt_logprobs) scores as the request per step tag does
    strategies      majority, weighted-best-of-n, beam, particle-filter and auto at budget 8 on 8 problems, with the
                    PRM on the second server, within a few problems of in-process
    resume          `ttc bench --concurrency 16` survives the policy server being killed and restarted
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

RUN_DIR = os.environ.get("TTC_VLLM", "")
pytestmark = pytest.mark.skipif(
    not RUN_DIR, reason="the vLLM tier: set TTC_VLLM=DIR after `python tests/vllm_servers.py up DIR` (.ci/run does)"
)
DATA = REPO / "ttc" / "data" / "arith500.jsonl"


@pytest.fixture(scope="module")
def servers() -> dict:
    path = Path(RUN_DIR) / "servers.json"
    if not path.is_file():
        pytest.fail(f"TTC_VLLM={RUN_DIR} has no servers.json: run `python tests/vllm_servers.py up {RUN_DIR}` first")
    return json.loads(path.read_text())


def served(servers: dict) -> list[str]:
    """The flags that put the built-in pair on the two servers."""
    return ["--backend", "openai", "--base-url", servers["policy"]["url"], "--prm-base-url", servers["prm"]["url"]]


def ttc(*args: str, stdin: bytes = b"", timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ttc", *args], input=stdin, capture_output=True, env=env,
                          cwd=REPO, timeout=timeout)  # fmt: skip


def problems(n: int) -> list[str]:
    return [json.loads(x)["problem"] for x in DATA.read_text().splitlines()[:n]]


def engines(servers: dict, dialect: str = "auto"):
    from ttc.engine.openai import OpenAIEngine

    models = REPO / "ttc" / "models"
    policy = OpenAIEngine(servers["policy"]["url"], local_model=str(models / "tiny-arith-policy.gguf"), dialect=dialect)
    prm = OpenAIEngine(servers["prm"]["url"], local_model=str(models / "tiny-arith-prm.gguf"), dialect=dialect)
    return policy, prm


def test_greedy_through_vllm_equals_in_process_greedy_on_24_held_out_problems(servers, tmp_path):
    stdin = "".join(p + "\n" for p in problems(24)).encode()
    there = ttc("solve", "-", "-s", "greedy", *served(servers), "--json", stdin=stdin)
    here = ttc("solve", "-", "-s", "greedy", "-p", "tiny-arith", "--json", "--threads", "2", stdin=stdin)
    assert there.returncode == 0 and there.stderr == b"", there.stderr.decode()
    assert here.returncode == 0, here.stderr.decode()
    a = [json.loads(x) for x in there.stdout.decode().splitlines()]
    b = [json.loads(x) for x in here.stdout.decode().splitlines()]
    assert len(a) == len(b) == 24
    differ = [(x["problem"], x["candidates"][0]["text"], y["candidates"][0]["text"]) for x, y in zip(a, b)
              if x["candidates"][0]["text"] != y["candidates"][0]["text"]]  # fmt: skip
    print(f"greedy through vLLM: {24 - len(differ)}/24 solutions equal in-process")
    assert not differ
    assert [x["spent"]["tokens_generated"] for x in a] == [y["spent"]["tokens_generated"] for y in b]


def test_generated_tokens_are_vllms_usage_and_the_choices_own_counts(servers):
    from ttc.engine.base import SamplingParams

    policy, _ = engines(servers)
    try:
        prompt = "Problem: 38-87+14-88+4+76\nSolution:\n"
        params = SamplingParams(temperature=0.8, max_tokens=192, seed=5)
        before = policy.usage.snapshot()
        comps = policy.sample(prompt, 8, params)
        spent = policy.usage - before
        assert spent.decode_calls == 1  # one request with n=8
        assert spent.generated_tokens == sum(c.n_generated for c in comps)
        for c in comps:
            assert c.n_generated == len(c.tokens) > 0
            assert policy.detokenize(c.tokens).startswith(c.text.rstrip("\n")) or c.finish_reason == "length"
        assert len({c.text for c in comps}) > 1  # the choices got different seeds
        # the same prompt again: its full blocks come from the prefix cache and are not counted
        n_prompt = len(policy.tokenize(prompt))
        before = policy.usage.snapshot()
        policy.sample(prompt, 2, params)
        again = policy.usage - before
        print(f"prompt of {n_prompt} tokens: {again.prompt_tokens} counted on a repeat (the rest cached)")
        assert again.prompt_tokens < n_prompt
        # forks of a search: copies of a prompt go as one prompt with n, distinct prompts as one list
        before = policy.usage.snapshot()
        forks = policy.generate_many([prompt] * 4 + ["Problem: 12+7\nSolution:\n"] * 4, params)
        spent = policy.usage - before
        assert spent.decode_calls == 1 and spent.generated_tokens == sum(c.n_generated for c in forks)
        assert len({c.text for c in forks[:4]}) > 1 and all(c.text.startswith("12+7") for c in forks[4:])
    finally:
        policy.close()


def test_prm_scores_from_one_request_per_solution_equal_the_requests_per_step_tag(servers):
    from ttc.builtin.arith import solution_text
    from ttc.builtin.train.formats import prm_text

    _, fast = engines(servers, "auto")
    _, plain = engines(servers, "plain")
    try:
        sols = [prm_text(p, solution_text(p).split("\n")) for p in problems(6)]
        tag = fast.tokenize("ки", add_bos=False)
        good_bad = [fast.tokenize(t, add_bos=False)[0] for t in ("+", "-")]
        suffixes = [fast.tokenize(s, add_bos=False) for s in sols]
        positions = [[i for i, t in enumerate(ids) if [t] == tag] for ids in suffixes]
        assert all(positions)
        b0, p0 = fast.usage.snapshot(), plain.usage.snapshot()
        a = fast.logprobs_at("", suffixes, positions, good_bad)
        b = plain.logprobs_at("", suffixes, positions, good_bad)
        calls = ((fast.usage - b0).decode_calls, (plain.usage - p0).decode_calls)
        print(f"PRM on {len(sols)} solutions: {calls[0]} request (prompt_logprobs) vs {calls[1]} (one per tag)")
        assert calls[0] == 1 < len(sols) < calls[1]  # the solutions go as one list of prompts
        for x, y in zip(a, b):
            assert x.shape == y.shape and abs(x - y).max() < 1e-4
    finally:
        fast.close()
        plain.close()


STRATEGIES = ["majority", "weighted-best-of-n", "beam", "particle-filter", "auto"]


def bench(out: Path, *extra: str, limit: int = 8) -> list[dict]:
    r = ttc("bench", str(DATA), "--limit", str(limit), "--strategies", ",".join(STRATEGIES), "--budgets", "8",
            "--seed", "0", "--out", str(out), *extra)  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines() if x.strip()]


def test_strategies_at_budget_8_through_vllm_match_in_process_and_count_vllms_usage(servers, tmp_path):
    there = bench(tmp_path / "vllm", *served(servers))
    here = bench(tmp_path / "here", "--threads", "2")
    for name in STRATEGIES:
        a = [x for x in there if x["strategy"] == name]
        b = [x for x in here if x["strategy"] == name]
        right = (sum(x["correct"] for x in a), sum(x["correct"] for x in b))
        calls = sum(x["spent"]["decode_calls"] for x in a) / len(a)
        print(f"{name}@8 on 8: {right[0]}/8 through vLLM, {right[1]}/8 in-process; {calls:.1f} requests per problem")
        assert len(a) == len(b) == 8 and abs(right[0] - right[1]) <= 2
        for x in a:
            assert x["spent"]["tokens_generated"] > 0 and x["spent"]["flops"] > 0
            if name not in ("auto", "majority") and x["spent"]["prm_tokens"] == 0:
                pytest.fail(f"{name}: no PRM tokens counted for {x['problem']}")
            if name in ("majority", "weighted-best-of-n"):  # every sample is a candidate: the counts must add up
                assert x["spent"]["tokens_generated"] == sum(c["tokens"] for c in x["candidates"])


def restart(servers: dict, run_dir: Path, tries: int = 3) -> None:
    """The policy server again on its port. In clean-clone CI runs a vLLM answered /v1/models and then exited
    (the engine's "CPU Generator does not use offset" on a seeded prompt prefilled in part, which
    `--no-enable-chunked-prefill` in vllm_servers.start now rules out), so it must still be up and answer a
    completion 5 s after it was ready, else it is started again."""
    import httpx
    import vllm_servers

    pol, log = servers["policy"], run_dir / f"{servers['policy']['name']}.log"
    for attempt in range(1, tries + 1):
        pid = vllm_servers.start(servers["python"], Path(servers["hf"]) / "policy", pol["name"], pol["port"], run_dir)
        vllm_servers.wait_ready(pol["url"], pid, log)
        time.sleep(5)
        body = {"model": pol["name"], "prompt": "1", "max_tokens": 1}
        try:
            if vllm_servers.alive(pid) and httpx.post(pol["url"] + "/completions", json=body, timeout=60).is_success:
                print(f"policy server restarted (try {attempt})")
                return
        except httpx.HTTPError:
            pass
        vllm_servers.stop(pid)
    pytest.fail(f"the policy server did not stay up after {tries} restarts; log: {log}")


def test_a_bench_through_vllm_resumes_after_the_policy_server_is_killed_and_restarted(servers, tmp_path):
    import vllm_servers

    run_dir, pol = Path(RUN_DIR), servers["policy"]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ttc", "bench", str(DATA), "--limit", "32", "--strategies", "majority", "--budgets",
           "8", "--seed", "0", *served(servers), "--concurrency", "16",
           "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples = out / "samples.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and len(samples.read_text().splitlines()) >= 4:
            break
        time.sleep(0.2)
    pid = int((run_dir / f"{pol['name']}.pid").read_text())
    died_first = proc.poll() is not None  # the bench ended before the kill: the server failed on its own
    vllm_servers.stop(pid)
    try:
        _, err = proc.communicate(timeout=300)
        done = len(samples.read_text().splitlines())
        print(f"killed after {done} of 32 records; bench exited {proc.returncode}: {err.decode().strip()[-200:]}")
        if died_first:
            log = (run_dir / f"{pol['name']}.log").read_text(errors="replace").splitlines()
            errors = [x for x in log if "Error" in x][-5:] or log[-10:]
            pytest.fail(f"the bench ended before the kill ({done} records); server log:\n" + "\n".join(errors))
        assert proc.returncode != 0 and 0 < done < 32
        assert "Traceback" not in err.decode() and "did not answer" in err.decode()
    finally:  # the server comes back on its port whatever happened (later tests and .ci/run's trap need it)
        restart(servers, run_dir)
    r = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, timeout=600)
    log = (run_dir / f"{pol['name']}.log").read_text(errors="replace").splitlines()[-20:]
    assert r.returncode == 0, r.stderr.decode()[-1000:] + "\nrestarted server's log:\n" + "\n".join(log)
    recs = [json.loads(x) for x in samples.read_text().splitlines() if x.strip()]
    ids = [x["id"] for x in recs]
    assert len(ids) == 32 == len(set(ids)), "records lost or repeated"
