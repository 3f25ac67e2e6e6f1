"""Compute-optimal policies: strict loading, level and budget lookup, and `auto` spending estimation
samples as candidates within its budget."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import make_tiny_gguf, preset_text, run_ttc

from ttc.engine.base import SamplingParams
from ttc.engine.llama import LlamaEngine
from ttc.errors import UsageError
from ttc.policy import Choice, dump_policy, load_policy
from ttc.presets import AnswerConfig, Preset, PRMConfig, PromptConfig
from ttc.prm import MathShepherdPRM
from ttc.strategies import REGISTRY, SolveContext

TABLE = {
    lvl: {2: {"strategy": "majority"}, 8: {"strategy": "beam", "options": {"width": 2}}} for lvl in (1, 2, 3, 4, 5)
}


def policy_yaml(tmp_path, **overrides) -> str:
    data = {"model": "tiny.gguf", "prm": "prm.gguf", "samples": 2, "thresholds": [0.9, 0.7, 0.5, 0.3], "table": TABLE}
    data.update(overrides)
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_levels_and_budget_lookup(tmp_path):
    pol = load_policy(policy_yaml(tmp_path))
    assert [pol.level(s) for s in (0.95, 0.9, 0.8, 0.6, 0.4, 0.1)] == [1, 1, 2, 3, 4, 5]
    assert pol.choose(3, 64) == (Choice("beam", {"width": 2}), 8)
    assert pol.choose(3, 4)[1] == 2 and pol.choose(3, 1)[1] == 2
    assert pol.estimator == "mean_score" and pol.value(0.5, 1.0) == 0.5
    blend = load_policy(policy_yaml(tmp_path, estimator="blend"))
    assert blend.value(0.5, 1.0) == 0.75 and blend.level(blend.value(0.5, 1.0)) == 2


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"table": {k: v for k, v in TABLE.items() if k != 4}}, "missing level 4"),
        ({"table": {**TABLE, 2: {2: {"strategy": "majority"}}}}, "lacks budget 8"),
        ({"thresholds": [0.3, 0.5, 0.7, 0.9]}, "descending"),
        ({"thresholds": [0.9, 0.5]}, "list of 4 numbers"),
        ({"samples": 0}, "positive integer"),
        ({"extra": 1}, "unknown key 'extra'"),
        ({"estimator": "vibes"}, "'estimator' must be one of mean_score, agreement, blend"),
        ({"table": {**TABLE, 3: {2: {"strategy": "beem"}, 8: {"strategy": "beam"}}}}, "'beem' is not a strategy"),
        ({"table": {**TABLE, 3: {2: {"strategy": "auto"}, 8: {"strategy": "beam"}}}}, "'auto' is not a strategy"),
    ],
)
def test_bad_policies_are_usage_errors(tmp_path, overrides, needle):
    with pytest.raises(UsageError, match=needle):
        load_policy(policy_yaml(tmp_path, **overrides))


def test_dump_then_load_round_trips(tmp_path):
    pol = load_policy(policy_yaml(tmp_path))
    dump_policy(pol, tmp_path / "again.yaml", made_with={"data": "x.jsonl"})
    again = load_policy(tmp_path / "again.yaml")
    assert again.table == pol.table and again.thresholds == pol.thresholds


def test_auto_counts_estimation_samples_and_keeps_them(tmp_path, engine):
    prm_path = make_tiny_gguf(tmp_path / "prm.gguf", seed=5, user_tokens=("ки",))
    prm_engine = LlamaEngine(str(prm_path), n_threads=2)
    cfg = PRMConfig(model="x", template="Problem: {problem}\nSolution:\n")
    preset = Preset(
        name="t", model="x", prompt=PromptConfig(template="Problem: {problem}\nSolution:\n"), step_delimiter="a",
        answer=AnswerConfig(format="boxed", last_number_fallback=True), prm=cfg,
    )  # fmt: skip
    ctx = SolveContext(
        problem="1+2", preset=preset, policy=engine, budget=8, seed=0,
        sampling=SamplingParams(temperature=1.0, max_tokens=12), prm=MathShepherdPRM(prm_engine, cfg, "a"),
        table=load_policy(policy_yaml(tmp_path)),
    )  # fmt: skip
    r = REGISTRY["auto"].run(ctx)
    d = r.details
    assert d["estimation_samples"] == 2 and d["chosen"]["strategy"] == "beam" and d["level"] in (1, 2, 3, 4, 5)
    assert r.spent.generations <= 8 * 1.5
    assert len(r.candidates) >= 2 and all(c.score is not None for c in r.candidates)
    prm_engine.close()


def test_a_policy_for_another_model_warns_naming_both(tmp_path, tiny_gguf):
    pol = policy_yaml(tmp_path, model="some-other-model.gguf")
    preset = tmp_path / "p.yaml"
    preset.write_text(preset_text(tiny_gguf) + f"policy: {pol}\n")
    r = run_ttc("difficulty", "1+2", "--preset", str(preset), "--samples", "2", "--budget", "8", "--json")
    assert r.returncode == 0, r.stderr.decode()
    assert "some-other-model.gguf" in r.stderr.decode() and "tiny.gguf" in r.stderr.decode()
    out = json.loads(r.stdout)
    assert out["level"] in (1, 2, 3, 4, 5) and out["auto_choice"]["strategy"] == "beam"


def test_policy_defaults_to_auto(tmp_path, tiny_gguf):
    preset = tmp_path / "p.yaml"
    preset.write_text(preset_text(tiny_gguf) + f"policy: {policy_yaml(tmp_path, model='tiny.gguf')}\n")
    r = run_ttc("solve", "1+2", "--preset", str(preset), "--budget", "4", "--json")
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["strategy"] == "auto"
