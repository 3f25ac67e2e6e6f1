"""Thinking models through the real engine: tiny bigram GGUFs with chat templates of the Qwen3, DeepSeek-R1
distill and gpt-oss forms (tests/thinking_models.py) whose logits emit the markers on cue."""

from __future__ import annotations

import json

import pytest
from conftest import one_line_error, run_ttc
from thinking_models import ANSWER, write_preset, write_thinking_gguf

from ttc.engine.base import SamplingParams, ThinkControl
from ttc.engine.llama.think import ThinkState
from ttc.solve import ModelOptions, SamplingOverrides, Solver
from ttc.thinking import ThinkOptions

MESSAGE_PART = "Time is up"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("thinking")
    out = {}
    for family in ("qwen3", "r1", "gpt-oss"):
        m = write_thinking_gguf(d / f"{family}.gguf", family, q=0.05)
        out[family] = write_preset(d, m, family)
    long = write_thinking_gguf(d / "qwen3-long.gguf", "qwen3", q=0.001)  # thinks for ~1000 tokens
    out["long"] = write_preset(d, long, "qwen3", max_tokens=64)
    return out


@pytest.fixture(scope="module")
def qwen3(models):
    s = Solver(ModelOptions(preset=str(models["qwen3"]), threads=2))
    yield s
    s.close()


@pytest.fixture(scope="module")
def r1(models):
    s = Solver(ModelOptions(preset=str(models["r1"]), threads=2))
    yield s
    s.close()


def test_detection_reads_each_familys_form_from_its_chat_template(models, qwen3, r1):
    q = qwen3.think_spec
    assert (q.start, q.end, q.opened, q.switch) == ("<think>", "</think>", False, "enable_thinking")
    assert q.form == "think tags"
    d = r1.think_spec
    assert (d.start, d.end, d.opened, d.switch) == ("<think>", "</think>", True, None)
    g = Solver(ModelOptions(preset=str(models["gpt-oss"]), threads=2))
    try:
        o = g.think_spec
        assert o.form == "channels" and o.start == "<|channel|>analysis<|message|>" and o.end.startswith("<|end|>")
        assert o.switch is None and not o.opened
        # gpt-oss's <|end|> is an end-of-generation token: inside the block it starts the marker instead
        setup = g.think_setup(ThinkOptions(budget=8))
        assert setup.control.end[0] in g.policy.eog_tokens() and len(setup.control.end) > 1
    finally:
        g.close()


@pytest.mark.parametrize("family", ["qwen3", "r1"])
def test_every_one_of_16_parallel_traces_keeps_its_own_think_budget_and_answers(family, qwen3, r1):
    solver = {"qwen3": qwen3, "r1": r1}[family]
    n_budget = 16
    r = solver.solve("1+1", "majority", 16, seed=3, think_budget=n_budget)
    assert r.answer == "42"
    assert len(r.candidates) == 16
    cut = [c for c in r.candidates if c.think["cut"]]
    natural = [c for c in r.candidates if not c.think["cut"]]
    assert cut and natural  # q = 0.05: about half of the traces reach 16 thinking tokens
    for c in r.candidates:
        assert c.think["tokens"] <= n_budget
        assert c.thinking == "7" * c.think["tokens"]  # the count is exact: one filler token per thinking token
        assert c.text == ANSWER and c.answer == "42"
        assert "</think>" not in c.text and "7" not in c.text and MESSAGE_PART not in c.text
    for c in cut:
        assert c.think["tokens"] == n_budget and c.think["forced_tokens"] > 1
    assert r.spent.forced_cuts == len(cut)
    assert r.spent.thinking_tokens == sum(c.think["tokens"] for c in r.candidates)
    assert r.spent.answer_tokens == sum(c.think["answer_tokens"] for c in r.candidates)
    # forced tokens are evaluated, not sampled: generated = thinking + answer + each trace's end of generation
    # + each natural end marker (+ the start marker where the model opens the block itself)
    markers = len(natural) + (16 if family == "qwen3" else 0)
    assert r.spent.tokens_generated == r.spent.thinking_tokens + r.spent.answer_tokens + 16 + markers


def test_think_min_replaces_early_ends_with_the_continuation_word(qwen3):
    r = qwen3.solve("1+1", "majority", 8, seed=5, thinking=ThinkOptions(budget=80, min_tokens=40))
    assert r.answer == "42"
    assert r.spent.forced_continuations > 0
    for c in r.candidates:
        assert 40 <= c.think["tokens"] <= 80
        assert c.thinking.count("Wait") == c.think["continuations"]
        assert c.text == ANSWER


def test_a_trace_cut_by_max_tokens_inside_its_thinking_has_no_answer(models):
    s = Solver(ModelOptions(preset=str(models["long"]), threads=2))
    try:
        r = s.solve("1+1", "majority", 4, seed=1)
        assert r.answer is None  # never 777... read from the unfinished block by the last-number fallback
        for c in r.candidates:
            assert c.answer is None and c.text == "" and c.finish_reason == "length"
            assert not c.think["closed"] and c.thinking.startswith("777")
    finally:
        s.close()


def test_thinking_off_uses_the_templates_switch_and_budget_zero_closes_the_block_in_the_prompt(qwen3, r1):
    off = qwen3.solve("1+1", "greedy", 1, thinking=ThinkOptions(mode="off"))
    assert off.answer == "42" and off.candidates[0].think["tokens"] == 0
    assert off.candidates[0].text == ANSWER.lstrip("\n")  # the template's empty block ends in "\n\n" itself
    assert qwen3.think_setup(ThinkOptions(mode="off")).variables == {"enable_thinking": False}
    zero = r1.solve("1+1", "majority", 4, think_budget=0)
    assert zero.answer == "42" and all(c.think["tokens"] == 0 and c.text == ANSWER for c in zero.candidates)
    setup = r1.think_setup(ThinkOptions(budget=0))
    assert setup.suffix.endswith("</think>") and setup.control.closed


@pytest.mark.parametrize(
    "strategy",
    ["greedy", "majority", "best-of-n", "weighted-best-of-n", "deepconf", "deepconf:mode=online", "self-certainty",
     "adaptive", "best-of-n:weight=confidence"],
)  # fmt: skip
def test_every_sampled_strategy_runs_over_thinking_traces_within_the_think_budget(strategy, qwen3):
    r = qwen3.solve("1+1", strategy, 8, seed=2, think_budget=12)
    assert r.answer == "42", (strategy, [c.text for c in r.candidates])
    assert r.spent.generations <= 8
    for c in r.candidates:
        assert c.think is not None and c.think["tokens"] <= 12
        assert "</think>" not in c.text and "7" not in c.text
        if c.scores:  # a verifier (the model judging itself) read the answer part, not the thinking
            assert len(c.scores) == len(c.steps)


def test_auto_on_a_thinking_model_keeps_to_parallel_traces(qwen3):
    r = qwen3.solve("1+1", "auto", 8, seed=2, think_budget=12)
    assert r.answer == "42"
    assert all(c.think["tokens"] <= 12 for c in r.candidates)


def test_the_think_controller_alone():
    end, start = (9,), (8,)
    st = ThinkState(ThinkControl(end=end, start=start, budget=3, cut=(5, 9)), eog_first=False)
    assert st.step(1, 0) == (0, ()) and st.state == "before"
    assert st.step(8, 1) == (0, ()) and st.state == "inside"
    assert st.step(7, 2) == (0, ()) and st.step(7, 3) == (0, ())
    assert st.step(7, 4) == (0, (5, 9)) and st.cut and st.n_thinking == 3 and st.answer_from == 7
    # an early end marker before min_tokens is taken back and the continuation word forced in its place
    st = ThinkState(ThinkControl(end=(9,), opened=True, min_tokens=4, resume=(6, 6)), eog_first=False)
    st.step(7, 0)
    assert st.step(9, 1) == (1, (6, 6)) and st.n_thinking == 3 and st.continuations == 1
    st.step(7, 4)
    assert st.step(9, 5) == (0, ()) and st.answer_from == 6 and st.n_thinking == 4
    # gpt-oss: the marker's first token is an end-of-generation token; inside the block the rest is forced
    st = ThinkState(ThinkControl(end=(3, 4, 5), start=(1, 2)), eog_first=True)
    st.step(1, 0), st.step(2, 1), st.step(7, 2)
    assert st.takes_eog(3) and st.step(3, 3) == (0, (4, 5)) and st.answer_from == 6 and not st.takes_eog(3)


def test_engine_counts_are_per_sequence_in_one_batch(qwen3):
    setup = qwen3.think_setup(ThinkOptions(budget=10))
    params = SamplingParams(temperature=1.0, max_tokens=200, seed=7, thinking=setup.control)
    prompt = setup.prompt(qwen3.preset, qwen3.policy, "1+1")
    comps = qwen3.policy.sample(prompt, 16, params)
    counts = [c.thinking.n_thinking for c in comps]
    assert max(counts) == 10 and min(counts) < 10  # cut ones at exactly 10, the others their own length
    assert all(c.thinking.answer == ANSWER for c in comps)


# -- the command line -------------------------------------------------------------------------------------------
def test_solve_prints_the_majority_answer_and_json_shows_where_each_trace_was_cut(models):
    r = run_ttc("solve", "1+1", "-p", str(models["qwen3"]), "--think-budget", "16", "--budget", "8")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "42"
    err = r.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "thinking model" in err[0] and "<think>" in err[0]
    r = run_ttc("solve", "1+1", "-p", str(models["qwen3"]), "--think-budget", "16", "--budget", "8", "--json")
    rec = json.loads(r.stdout)
    assert rec["config"]["thinking"]["budget"] == 16
    assert all(c["think"]["tokens"] <= 16 for c in rec["candidates"])
    assert rec["spent"]["forced_cuts"] == sum(c["think"]["cut"] for c in rec["candidates"])


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--think-budget", "-3"], ["--think-budget", "0 or more"]),
        (["--think-budget", "1.5"], ["--think-budget"]),
        (["--think-budget", "8", "--think-min", "9"], ["--think-min 9", "above --think-budget 8"]),
        (["--think-budget", "300", "--max-tokens", "200"], ["no room for an answer", "--max-tokens 200"]),
        (["--thinking", "maybe"], ["--thinking", "on or off"]),
        (["--think-budget", "16", "-s", "beam"], ["beam", "majority"]),
    ],
)
def test_bad_thinking_flags_get_one_line_and_exit_2(models, args, needles):
    one_line_error(run_ttc("solve", "1+1", "-p", str(models["qwen3"]), *args), 2, *needles)


def test_thinking_off_where_the_template_cannot_is_one_line(models):
    one_line_error(run_ttc("solve", "1+1", "-p", str(models["r1"]), "--thinking", "off"), 2, "--thinking off", "r1")


def test_think_flags_on_a_model_that_does_not_think_are_one_line(models):
    one_line_error(run_ttc("solve", "1+1", "--think-budget", "5"), 2, "not a thinking model")
    one_line_error(run_ttc("solve", "1+1", "--thinking", "on"), 2, "not a thinking model")


def test_a_budget_above_max_tokens_without_the_flag_raises_it_with_a_note(models):
    r = run_ttc("solve", "1+1", "-p", str(models["qwen3"]), "--think-budget", "300", "--budget", "2")
    assert r.returncode == 0 and r.stdout.decode().strip() == "42"
    assert "max_tokens raised to" in r.stderr.decode()


def test_markers_that_are_not_in_the_vocabulary_are_one_line(models, tmp_path):
    text = models["qwen3"].read_text() + 'thinking:\n  start: "<reason>"\n  end: "</reason>"\n'
    p = tmp_path / "bad-markers.yaml"
    p.write_text(text)
    one_line_error(run_ttc("solve", "1+1", "-p", str(p), "--think-budget", "8"), 2, "reason>", "not a token")


def test_a_preset_section_declares_markers_on_a_model_whose_template_has_none(models, tmp_path):
    # the same model with the markers declared and the detected facts overridden
    text = models["r1"].read_text() + 'thinking:\n  start: "<think>"\n  end: "</think>"\n  continuation: "Wait"\n'
    p = tmp_path / "declared.yaml"
    p.write_text(text)
    s = Solver(ModelOptions(preset=str(p), threads=2))
    try:
        assert s.think_spec.form == "preset" and s.think_spec.opened
        r = s.solve("1+1", "majority", 4, think_budget=8, sampling=SamplingOverrides(max_tokens=120))
        assert r.answer == "42" and all(c.think["tokens"] <= 8 for c in r.candidates)
    finally:
        s.close()
