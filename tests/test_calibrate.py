"""ttc calibrate on a tiny random model: it writes a policy that loads, covers every level and budget,
reports cross-validated accuracies, and refuses data without answers."""

from __future__ import annotations

import json

from conftest import REPO, preset_text, run_ttc

from ttc.policy import ESTIMATORS, LEVELS, load_policy

FIXTURE = REPO / "tests" / "fixtures" / "arith_head.jsonl"


def test_calibrate_writes_a_complete_policy_and_resumes(tmp_path, tiny_gguf):
    preset = tmp_path / "p.yaml"
    preset.write_text(preset_text(tiny_gguf))
    out = tmp_path / "policies" / "t.yaml"
    args = [
        "calibrate", str(FIXTURE), "--out", str(out), "--dir", str(tmp_path / "runs"), "--budgets", "1,2,4",
        "--samples", "2", "--sampled", "majority,weighted-best-of-n", "--search", "beam:width=2,particle-filter",
        "--preset", str(preset), "--quiet",
    ]  # fmt: skip
    r = run_ttc(*args)
    assert r.returncode == 0, r.stderr.decode()
    pol = load_policy(out)
    assert sorted(pol.table) == list(LEVELS) and all(sorted(row) == [1, 2, 4] for row in pol.table.values())
    assert pol.thresholds == sorted(pol.thresholds, reverse=True) and pol.samples == 2
    assert pol.model == "tiny.gguf"
    assert pol.estimator in ESTIMATORS and pol.difficulty["estimator"] == pol.estimator
    assert set(pol.difficulty["spearman_vs_pass_rate"]) == set(ESTIMATORS)
    cell = pol.accuracy[1][4]
    assert {"chosen", "accuracy", "cross_validated", "problems", "all"} <= set(cell)
    assert "beam:width=2" in cell["all"] or cell["problems"] == 0
    # A beam of width 2 cannot run at budget 1, particle filtering can: one bench per smallest budget.
    runs = tmp_path / "runs"
    assert (runs / "search-from1").is_dir() and (runs / "search-from2").is_dir()
    with_beam = {json.loads(x)["budget"] for x in (runs / "search-from2" / "samples.jsonl").read_text().splitlines()}
    assert with_beam == {2, 4}
    lines = (tmp_path / "runs" / "sampled" / "samples.jsonl").read_text().splitlines()
    r2 = run_ttc(*args, "--resume")
    assert r2.returncode == 0, r2.stderr.decode()
    assert (tmp_path / "runs" / "sampled" / "samples.jsonl").read_text().splitlines() == lines


def test_calibration_data_without_answers_is_refused(tmp_path, tiny_gguf):
    preset = tmp_path / "p.yaml"
    preset.write_text(preset_text(tiny_gguf))
    data = tmp_path / "noanswers.jsonl"
    data.write_text("\n".join(json.dumps({"problem": f"{i}+1"}) for i in range(3)) + "\n")
    r = run_ttc("calibrate", str(data), "--out", str(tmp_path / "p.yaml2"), "--dir", str(tmp_path / "r"),
                "--preset", str(preset), "--budgets", "1,2", "--quiet")  # fmt: skip
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "answer" in err


def test_the_estimator_that_ranks_pass_rates_best_is_chosen():
    from ttc.policy.calibrate import pick_estimator

    stats = {
        str(i): {"mean_score": (i * 37 % 11) / 11, "agreement": i / 10, "pass_rate": i / 10 + 0.01 * (i % 2)}
        for i in range(10)
    }
    chosen, report = pick_estimator(stats)
    assert chosen == "agreement" and report["spearman_vs_pass_rate"]["agreement"] == 1.0
    stats = {k: {**v, "mean_score": v["pass_rate"], "agreement": 0.5} for k, v in stats.items()}
    assert pick_estimator(stats)[0] == "mean_score"  # a constant agreement has no rho
    assert pick_estimator({k: {**v, "pass_rate": None} for k, v in stats.items()})[0] == "mean_score"
