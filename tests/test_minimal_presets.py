"""Every strategy runs on a preset that names only a model: the defaults fill in the rest (self-judging for
the PRM, the default revision layout for `revise`). Checked on a tiny random GGUF at budget 4, through the
command line as a user runs it and through the Solver on a minimal raw preset; `auto`, which needs a
calibrated policy, fails fast with one line."""

from __future__ import annotations

import json

import pytest
from conftest import CHATML, make_tiny_gguf, run_ttc

from ttc.engine.base import SamplingParams
from ttc.engine.llama import LlamaEngine
from ttc.presets import Preset, PromptConfig, RevisionConfig, load_preset
from ttc.solve import ModelOptions, Solver
from ttc.strategies import REGISTRY, SolveContext
from ttc.strategies.revision import layout

STRATEGIES = [name for name in REGISTRY if name != "auto"]
PRM_STRATEGIES = {name for name, spec in REGISTRY.items() if spec.needs_prm} - {"auto"}

MINIMAL_RAW = """\
model: {model}
prompt:
  format: raw
  template: "Problem: {{problem}}\\nSolution:"
step_delimiter: "\\n"
answer:
  format: boxed
  last_number_fallback: true
sampling:
  max_tokens: 128
"""


@pytest.fixture(scope="module")
def model_only(tmp_path_factory, tiny_gguf):
    path = tmp_path_factory.mktemp("presets") / "bare.yaml"
    path.write_text(f"model: {tiny_gguf}\n")
    return path


def check_record(rec: dict, name: str) -> None:
    spent = rec["spent"]
    assert rec["strategy"] == name and rec["budget"] == 4
    assert 0 < spent["generations"] <= 4, spent
    assert spent["tokens_generated"] > 0 and spent["prompt_tokens"] > 0, spent
    assert rec["candidates"] and all(c["tokens"] >= 0 for c in rec["candidates"])
    if name in PRM_STRATEGIES:
        assert spent["prm_tokens"] > 0, spent  # self-judged: the policy read its own steps


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_runs_on_a_preset_that_names_only_a_model(model_only, name):
    r = run_ttc("solve", "12+7", "-p", str(model_only), "-s", name, "-b", "4", "--json", "--threads", "2", "-q")
    assert r.returncode == 0, r.stderr.decode()
    check_record(json.loads(r.stdout), name)


def test_auto_without_a_policy_runs_the_prior_and_warns_once(model_only):
    r = run_ttc("solve", "12+7", "-p", str(model_only), "-s", "auto", "-b", "8", "--threads", "2", "--json")
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert err.count("built-in prior") == 1 and "ttc calibrate" in err, err
    rec = json.loads(r.stdout)
    assert rec["details"]["policy"] == "the built-in prior (uncalibrated)"
    assert 4 <= rec["spent"]["generations"] <= 8
    # no PRM configured: confidence, not self-judging (no PRM tokens); a fully agreeing wave stops at 4
    assert rec["spent"]["prm_tokens"] == 0 and all(c["trace_scores"] for c in rec["candidates"])
    chosen = rec["details"]["chosen"]["strategy"]
    assert chosen == ("majority" if rec["details"]["agreement"] == 1.0 else "deepconf"), rec["details"]
    assert (rec["spent"]["generations"] == 4) == (chosen == "majority")


def test_every_strategy_runs_on_the_minimal_raw_preset(tmp_path, tiny_gguf):
    path = tmp_path / "raw.yaml"
    path.write_text(MINIMAL_RAW.format(model=tiny_gguf))
    solver = Solver(ModelOptions(preset=str(path), threads=2))
    try:
        for name in STRATEGIES:
            r = solver.solve("12+7", name, 4, seed=3)
            check_record(json.loads(json.dumps(r.to_dict())), name)
    finally:
        solver.close()


def test_presets_show_gives_the_default_revision_layout(model_only):
    r = run_ttc("presets", "show", str(model_only))
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    default = RevisionConfig()
    assert "revision:" in out and "{attempts}{prompt}" in out and f"max_attempts: {default.max_attempts}" in out
    assert load_preset(str(model_only)).revision == default


def ctx_for(engine, preset: Preset) -> SolveContext:
    return SolveContext(
        problem="12+7", preset=preset, policy=engine, budget=4, seed=0, sampling=SamplingParams(max_tokens=8)
    )


def test_the_default_revision_layout_is_the_attempts_then_the_problem_again(engine):
    preset = Preset(model="x", prompt=PromptConfig(template="Problem: {problem}\nSolution:"))
    assert layout(ctx_for(engine, preset), RevisionConfig()) == ("", "Problem: 12+7\nSolution:", False)


def test_a_chat_revision_puts_the_attempts_in_the_user_message(tmp_path):
    eng = LlamaEngine(str(make_tiny_gguf(tmp_path / "chat.gguf", chat_template=CHATML)), n_threads=2)
    try:
        preset = Preset(model="x", prompt=PromptConfig(format="chat", template="{problem}", system="Be brief."))
        head, tail, chat = layout(ctx_for(eng, preset), RevisionConfig())
        assert chat
        assert head == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
        assert tail == "12+7<|im_end|>\n<|im_start|>assistant\n"
        r = REGISTRY["revise"].run(ctx_for(eng, preset))
        assert len(r.candidates) == 4 and r.details["chains"] * r.details["sequential"] == 4
    finally:
        eng.close()
