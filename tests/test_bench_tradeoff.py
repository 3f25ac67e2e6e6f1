"""`ttc bench DATA --presets A,B`: two models on the same problems, and the FLOPs-matched table (the best
accuracy each reaches within each FLOPs level, per difficulty group, and which one wins)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, one_line_error, run_ttc

from ttc.bench.tradeoff import flops_matched

ARITH = REPO / "ttc" / "data" / "arith500.jsonl"


def _rows(model_right: list[bool], flops: float, strategy: str, budget: int, ops: list[int]) -> list[dict]:
    return [
        {"id": str(i), "strategy": strategy, "budget": budget, "correct": ok, "flops": flops, "difficulty": {"ops": o}}
        for i, (ok, o) in enumerate(zip(model_right, ops))
    ]


def test_the_table_takes_each_models_best_cell_within_the_flops_and_names_a_winner_only_outside_the_noise():
    n = 120
    ops = [1 + i % 8 for i in range(n)]
    small = _rows([i % 10 < 4 for i in range(n)], 1e6, "greedy", 1, ops)  # 40%, cheap
    small += _rows([i % 10 < 8 for i in range(n)], 16e6, "weighted-best-of-n", 16, ops)  # 80% at 16x
    large = _rows([i % 10 < 6 for i in range(n)], 8e6, "greedy", 1, ops)  # 60% at 8x
    table = flops_matched({"small": small, "large": large})
    rows = {(r["group"], r["flops_max"]): r for r in table}
    assert {g for g, _ in rows} == {"all", "ops=1-2", "ops=3-5", "ops=6-8"}
    assert [f for g, f in rows if g == "all"] == [1e6, 2e6, 4e6, 8e6, 16e6]
    first = rows[("all", 1e6)]
    assert first["models"]["large"] is None and first["winner"] == "small" and first["why"] == "only one fits"
    at8 = rows[("all", 8e6)]  # large greedy 60% against small greedy 40%: the same problems, +20 points
    assert at8["models"]["small"]["strategy"] == "greedy" and at8["models"]["large"]["accuracy"] == 0.6
    assert at8["winner"] == "large" and at8["difference"] == pytest.approx(-0.2)
    assert at8["difference_low"] < -0.2 < at8["difference_high"] < 0
    at16 = rows[("all", 16e6)]  # small with its verifier at 16x: 80% against 60%
    assert at16["models"]["small"]["strategy"] == "weighted-best-of-n" and at16["winner"] == "small"
    assert 0 < at16["difference_low"] < at16["difference"] == pytest.approx(0.2)
    # on 15 problems (ops 1-2) the same 20-point gap is within noise
    close = rows[("ops=1-2", 16e6)]
    assert close["models"]["small"]["n"] == 30 and close["winner"] in ("small", "tie")
    for r in table:
        for c in r["models"].values():
            assert c is None or c["mean_flops"] <= r["flops_max"] * (1 + 1e-9)


def test_a_tie_when_the_paired_interval_includes_zero():
    same = [i % 2 == 0 for i in range(40)]
    table = flops_matched({"a": _rows(same, 1.0, "greedy", 1, [3] * 40), "b": _rows(same, 1.0, "greedy", 1, [3] * 40)})
    assert {r["winner"] for r in table} == {"tie"} and all(r["difference"] == 0 for r in table)


@pytest.fixture(scope="module")
def copy_preset(tmp_path_factory) -> Path:
    """tiny-arith under another name: the same model, so every FLOPs-matched row must be a tie or one-sided."""
    text = (REPO / "presets" / "tiny-arith.yaml").read_text()
    text = text.replace("name: tiny-arith\n", "name: arith-twin\n").replace(
        "policy: policies/tiny-arith.yaml", f"policy: {REPO / 'presets' / 'policies' / 'tiny-arith.yaml'}"
    )
    path = tmp_path_factory.mktemp("presets") / "twin.yaml"
    path.write_text(text)
    return path


def test_two_presets_run_on_the_same_problems_and_the_folder_is_summarized_again(copy_preset, tmp_path):
    out = tmp_path / "run"
    args = ["bench", str(ARITH), "--limit", "5", "--presets", f"tiny-arith,{copy_preset}", "--out", str(out)]
    r = run_ttc(*args, "--strategies", "greedy,majority", "--budgets", "1,4", "--preset-budgets", "arith-twin=1,2",
                "--threads", "1", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    result = json.loads(r.stdout)
    assert result["presets"] == ["tiny-arith", "arith-twin"]
    assert json.loads((out / "tradeoff.json").read_text()) == result
    for name, budgets in (("tiny-arith", [1, 4]), ("arith-twin", [1, 2])):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["budgets"] == budgets and summary["problems"] == 5 and summary["preset"] == name
    recs = {}
    for name in ("tiny-arith", "arith-twin"):
        for line in (out / name / "samples.jsonl").read_text().splitlines():
            rec = json.loads(line)
            recs[(name, rec["id"], rec["strategy"], rec["budget"])] = rec
    # the same model and seed: greedy at budget 1 gives the same answers and the same FLOPs under both names
    for (name, pid, s, b), rec in recs.items():
        if name == "tiny-arith" and s == "greedy" and b == 1:
            twin = recs[("arith-twin", pid, s, b)]
            assert twin["answer"] == rec["answer"] and twin["spent"]["flops"] == rec["spent"]["flops"] > 0
    rows = result["flops_matched"]
    assert rows and {r["group"] for r in rows} >= {"all"}
    for row in rows:
        for c in row["models"].values():
            assert c is None or c["mean_flops"] <= row["flops_max"] * (1 + 1e-9)
        both = [c for c in row["models"].values() if c is not None]
        assert row["winner"] == "tie" or len(both) == 1 or row["difference"] != 0
    err = r.stderr.decode()
    assert "FLOPs-matched, all" in err and "Traceback" not in err
    assert (out / "tradeoff.csv").read_text().startswith("group,flops_max,model,")
    again = run_ttc("bench", str(out), "--json")  # nothing runs; the same table
    assert again.returncode == 0, again.stderr.decode()
    assert json.loads(again.stdout)["flops_matched"] == rows


@pytest.mark.parametrize(
    "presets,more,needle",
    [
        ("tiny-arith", [], "two or more models"),
        ("tiny-arith,no-such-preset", [], "no-such-preset"),
        ("tiny-arith,tiny-arith", [], "two or more models"),
        ("tiny-arith,TWIN", ["--preset-budgets", "nope=1,2"], "not in --presets"),
        ("tiny-arith,TWIN", ["--preset-budgets", "arith-twin"], "NAME=BUDGETS"),
        ("tiny-arith,TWIN", ["--preset", "tiny-arith"], "do not go together"),
        ("tiny-arith,TWIN", ["--model", "x.gguf"], "--model does not go with --presets"),
    ],
)
def test_bad_preset_lists_are_one_line_and_exit_2(copy_preset, tmp_path, presets, more, needle):
    presets = presets.replace("TWIN", str(copy_preset))
    r = run_ttc("bench", str(ARITH), "--limit", "2", "--presets", presets, "--out", str(tmp_path / "o"), *more)
    one_line_error(r, 2, needle)
    assert not (tmp_path / "o" / "tiny-arith" / "samples.jsonl").exists()


def test_presets_whose_answers_are_graded_differently_cannot_be_compared(copy_preset, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(copy_preset.read_text().replace("format: boxed", "format: last-number").replace("arith-twin", "x"))
    r = run_ttc("bench", str(ARITH), "--presets", f"tiny-arith,{other}", "--out", str(tmp_path / "o"))
    one_line_error(r, 2, "different formats", "tiny-arith: boxed", "x: last-number")
