"""Compute-optimal policies: strict loading, level and budget lookup, and `auto` spending estimation
samples as candidates within its budget."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO, make_tiny_gguf, preset_text, run_ttc

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
        ({"table": {**TABLE, 3: {2: {"strategy": "majority", "spend": 4}, 8: {"strategy": "beam"}}}}, "'spend' must"),
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
    # A choice that spends less: 2 estimation samples + 3 majority samples of the budget 8.
    thrifty = {lvl: {2: {"strategy": "majority"}, 8: {"strategy": "majority", "spend": 5}} for lvl in TABLE}
    ctx.table = load_policy(policy_yaml(tmp_path, table=thrifty))
    r = REGISTRY["auto"].run(ctx)
    assert r.details["chosen"]["spend"] == 5 and len(r.candidates) == 5 and r.spent.generations == 5
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


def test_the_shipped_policy_fits_the_builtin_pair():
    from ttc.policy.calibrate import min_budget
    from ttc.presets import load_preset

    preset = load_preset("tiny-arith")
    pol = load_policy(REPO / "presets" / preset.policy)
    assert pol.model == "tiny-arith-policy.gguf" and pol.prm == "tiny-arith-prm.gguf"
    assert all(sorted(row) == [1, 2, 4, 8, 16, 32, 64] for row in pol.table.values())
    for row in pol.table.values():
        for budget, choice in row.items():
            label = choice.strategy + "".join(f":{k}={v}" for k, v in choice.options.items())
            assert min_budget(label) <= budget, (label, budget)
    # what calibration measured is kept beside the choice, and the estimator ranked pass rates well there
    assert pol.accuracy[1][16]["problems"] > 0 and pol.difficulty["spearman_vs_pass_rate"][pol.estimator] > 0.6


def test_difficulty_on_the_builtin_pair_names_the_level_and_the_choice():
    r = run_ttc("difficulty", "37+48-19", "--samples", "4", "--budget", "16", "--threads", "2")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() in {"1", "2", "3", "4", "5"}
    err = r.stderr.decode()
    assert "mean PRM score" in err and "auto at budget 16 would run" in err and "warning" not in err


def test_a_choice_may_spend_less_than_the_budget():
    c = Choice("majority", spend=4)
    assert c.budget_for(16, 16) == 4 and c.budget_for(32, 16) == 8 and c.budget_for(2, 16) == 1
    assert Choice("majority").budget_for(20, 16) == 20


def test_calibration_picks_a_smaller_budget_when_more_does_not_help():
    from ttc.policy.calibrate import choose

    ids = [f"p{i}" for i in range(50)]
    difficulty = {pid: i / 50 for i, pid in enumerate(ids)}
    records = []
    for i, pid in enumerate(ids):
        records += [
            {"id": pid, "strategy": "majority", "budget": 4, "correct": i % 5 != 0},  # 80% right at 4
            {"id": pid, "strategy": "majority", "budget": 16, "correct": i % 5 > 1},  # 60% at 16
            {"id": pid, "strategy": "beam", "budget": 16, "correct": i % 10 == 0},
        ]
    pol = choose(records, difficulty, [4, 16], samples=2)
    for level in pol.table:
        assert pol.table[level][16] == Choice("majority", {}, spend=4)
        assert pol.accuracy[level][16]["chosen"] == "majority@4" and pol.table[level][4].spend is None


def test_calibration_fills_levels_separately_only_where_that_cross_validates():
    from ttc.policy.calibrate import choose

    ids = [f"p{i:02d}" for i in range(100)]
    difficulty = {pid: i / 100 for i, pid in enumerate(ids)}  # 20 problems per level
    records = []
    for i, pid in enumerate(ids):
        level = 5 - i // 20  # the highest estimates are level 1
        records += [  # majority is right on levels 1-2, beam on levels 3-5: the levels really differ at 8
            {"id": pid, "strategy": "majority", "budget": 8, "correct": level <= 2},
            {"id": pid, "strategy": "beam", "budget": 8, "correct": level >= 3},
            # at 4, weighted is right on 70% of every level; majority on 60%, in a pattern that differs by level
            {"id": pid, "strategy": "weighted-best-of-n", "budget": 4, "correct": i % 10 < 7},
            {"id": pid, "strategy": "majority", "budget": 4, "correct": (i * 7 + level) % 10 < 6},
        ]
    pol = choose(records, difficulty, [4, 8], samples=2)
    assert pol.selection[8]["rule"].startswith("per-level")
    assert [pol.table[lv][8].strategy for lv in (1, 2, 3, 4, 5)] == ["majority"] * 2 + ["beam"] * 3
    assert pol.selection[4]["rule"] == "pooled"
    assert {pol.table[lv][4].strategy for lv in (1, 2, 3, 4, 5)} == {"weighted-best-of-n"}


def test_the_prior_policy_votes_where_the_wave_agrees_and_searches_where_it_does_not():
    from ttc.policy.prior import prior_policy

    pol = prior_policy(with_prm=True)
    plan = lambda agreement, budget: pol.plan(pol.level(pol.value(0.0, agreement)), budget)  # noqa: E731
    assert plan(1.0, 16)[0].strategy == plan(0.75, 16)[0].strategy == "weighted-best-of-n"
    assert plan(1.0, 16)[2] == plan(0.75, 16)[2] == 16
    assert plan(0.5, 16)[0].strategy == plan(0.25, 64)[0].strategy == "particle-filter"
    assert plan(0.25, 2)[0].strategy == "majority" and plan(0.25, 2)[2] == 2
    assert all(c.strategy in REGISTRY for row in pol.table.values() for c in row.values())


def test_auto_with_the_prior_on_the_builtin_pair_follows_the_wave_agreement(tmp_path):
    """The built-in preset with its `policy:` removed: auto runs the prior, within budget on every problem,
    a weighted vote where 3 or 4 of the estimation samples agreed and particle filtering elsewhere."""
    from ttc.solve import ModelOptions, Solver

    text = (REPO / "presets" / "tiny-arith.yaml").read_text()
    path = tmp_path / "prior.yaml"
    path.write_text("\n".join(x for x in text.splitlines() if not x.startswith("policy:")) + "\n")
    lines = (REPO / "ttc" / "data" / "arith500.jsonl").read_text().splitlines()[:12]
    solver = Solver(ModelOptions(preset=str(path), threads=2))
    try:
        seen = set()
        for line in lines:
            r = solver.solve(json.loads(line)["problem"], "auto", 8, seed=0)
            d = r.details
            assert d["policy"] == "the built-in prior (uncalibrated)" and r.spent.generations <= 8
            want = "weighted-best-of-n" if d["agreement"] >= 0.75 else "particle-filter"
            assert d["chosen"]["strategy"] == want
            seen.add(want)
        assert len(seen) == 2  # both kinds of problem occurred
    finally:
        solver.close()
