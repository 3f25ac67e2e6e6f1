"""The bench loop on the real engine (a tiny random model): derived budgets equal direct runs, summaries agree
with samples.jsonl, a resumed run ends with exactly the records of an uninterrupted one, and problems that
cannot run are recorded as wrong without stopping the run."""

from __future__ import annotations

import io
import json
import random
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import preset_text
from rich.console import Console

from ttc.bench import BenchOptions, run_bench
from ttc.bench import run as bench_run
from ttc.bench.store import SAMPLES
from ttc.errors import UsageError
from ttc.presets import load_preset
from ttc.record import Candidate, Result, Spent
from ttc.solve import ModelOptions

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARITH = FIXTURES / "arith_head.jsonl"


@pytest.fixture(scope="module")
def preset(tmp_path_factory, tiny_gguf) -> Path:
    path = tmp_path_factory.mktemp("presets") / "bench-random.yaml"
    path.write_text(preset_text(tiny_gguf, temperature=1.0, max_tokens=8))
    return path


def bench(preset: Path, out: Path, data: Path = ARITH, **kw) -> tuple[dict, str]:
    console = Console(file=io.StringIO(), width=200)
    kw.setdefault("budgets", [1, 2, 4])
    opts = BenchOptions(data=str(data), out=str(out), models=ModelOptions(str(preset), threads=1), **kw)
    summary = run_bench(opts, console=console)
    return summary, console.file.getvalue()


def records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / SAMPLES).read_text().splitlines()]


def by_key(recs: list[dict]) -> dict:
    return {(r["id"], r["strategy"], r["budget"]): r for r in recs}


def same_record(a: dict, b: dict) -> bool:
    """The same outcome (not the same timings)."""
    return (
        [c["text"] for c in a["candidates"]] == [c["text"] for c in b["candidates"]]
        and (a["answer"], a["correct"], a["details"]) == (b["answer"], b["correct"], b["details"])
        and a["spent"]["tokens_generated"] == b["spent"]["tokens_generated"]
    )


def test_derived_budgets_equal_running_those_budgets_directly(preset, tmp_path):
    bench(preset, tmp_path / "curve", budgets=[1, 2, 4])
    bench(preset, tmp_path / "two", budgets=[2])
    curve, direct = by_key(records(tmp_path / "curve")), by_key(records(tmp_path / "two"))
    assert len(direct) == 5
    for key, rec in direct.items():
        derived = curve[key]
        assert derived["bench"]["derived_from"] == 4 and derived["details"]["subset_of_budget"] == 4
        assert rec["bench"]["derived_from"] is None
        d, r = dict(derived), dict(rec)
        d["details"] = {k: v for k, v in d["details"].items() if k != "subset_of_budget"}
        assert same_record(d, r), key


def test_summary_files_agree_with_samples(preset, tmp_path):
    out = tmp_path / "run"
    summary, _ = bench(preset, out, strategies=["majority", "greedy"], budgets=[1, 2])
    recs = records(out)
    assert len(recs) == 5 * 2 * 2 == summary["records"]
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for row in summary["by_budget"]:
        mine = [r for r in recs if (r["strategy"], r["budget"]) == (row["strategy"], row["budget"])]
        assert row["n"] == len(mine) == 5 and row["correct"] == sum(r["correct"] for r in mine)
        assert row["mean_tokens"] == pytest.approx(sum(r["spent"]["tokens_generated"] for r in mine) / 5)
    ops = Counter(r["difficulty"]["ops"] for r in recs if (r["strategy"], r["budget"]) == ("majority", 1))
    assert {row["value"]: row["n"] for row in summary["by_difficulty"]["ops"] if row["budget"] == 1} == ops
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("group,value,strategy,budget,n,correct,accuracy")
    assert len(csv_lines) == 1 + len(summary["by_budget"]) + len(summary["by_difficulty"]["ops"])
    assert summary["overhead"]["records_run"] == 5 + 5  # majority and greedy each run once per problem
    assert summary["overhead"]["engine_wall_s"] > 0 and summary["overhead"]["ratio"] >= 1


def test_a_resumed_run_ends_with_exactly_the_records_of_an_uninterrupted_one(preset, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    bench(preset, whole)
    full = (whole / SAMPLES).read_bytes()
    lines = full.splitlines(keepends=True)
    (cut / SAMPLES).parent.mkdir()
    (cut / SAMPLES).write_bytes(b"".join(lines[:7]) + lines[7][:30])  # killed while writing line 8
    (cut / "config.json").write_bytes((whole / "config.json").read_bytes())
    summary, said = bench(preset, cut, resume=True)
    assert "partial last line" in said
    recs = records(cut)
    keys = [(r["id"], r["strategy"], r["budget"]) for r in recs]
    assert len(keys) == len(set(keys)) == 15
    assert (cut / SAMPLES).read_bytes().startswith(b"".join(lines[:7]))  # nothing written before is lost
    expected = by_key([json.loads(x) for x in lines])
    assert all(same_record(r, expected[k]) for k, r in by_key(recs).items())
    assert summary["overhead"]["records_skipped"] == 7


def test_resume_derives_a_missing_smaller_budget_from_the_stored_larger_one(preset, tmp_path):
    out = tmp_path / "run"
    bench(preset, out)
    before = by_key(records(out))
    kept = [x for x in (out / SAMPLES).read_text().splitlines(keepends=True) if json.loads(x)["budget"] != 1]
    (out / SAMPLES).write_text("".join(kept))
    summary, _ = bench(preset, out, resume=True)
    assert summary["overhead"]["records_run"] == 0 and summary["overhead"]["records_derived"] == 5
    after = by_key(records(out))
    assert after.keys() == before.keys() and all(same_record(after[k], before[k]) for k in before)


def test_resume_of_a_finished_run_runs_nothing_and_refuses_a_changed_config(preset, tmp_path):
    out = tmp_path / "run"
    bench(preset, out)
    summary, _ = bench(preset, out, resume=True)
    assert summary["overhead"]["records_run"] == 0 and summary["records"] == 15
    with pytest.raises(UsageError, match="seed: 0 -> 1"):
        bench(preset, out, resume=True, seed=1)
    with pytest.raises(UsageError, match="not empty"):
        bench(preset, out)


def write_dataset(path: Path, problems: list[str]) -> Path:
    path.write_text("".join(json.dumps({"problem": p, "answer": 1}) + "\n" for p in problems))
    return path


def test_a_problem_longer_than_the_context_is_recorded_as_wrong_and_the_run_goes_on(preset, tmp_path):
    data = write_dataset(tmp_path / "d.jsonl", ["1+2", "1+" * 3000 + "1", "3+4"])
    summary, said = bench(preset, tmp_path / "run", data=data, budgets=[1, 2])
    recs = by_key(records(tmp_path / "run"))
    assert len(recs) == 6
    for b in (1, 2):
        bad = recs[("2", "majority", b)]
        assert "context" in bad["details"]["error"] and bad["correct"] is False and bad["answer"] is None
    assert summary["overhead"]["records_failed"] == 2


def test_problems_too_long_at_the_start_are_recorded_as_wrong_not_taken_for_a_bad_config(preset, tmp_path):
    data = write_dataset(tmp_path / "d.jsonl", ["1+" * (3000 + i) + "1" for i in range(3)] + ["1+2"])
    summary, _ = bench(preset, tmp_path / "run", data=data, budgets=[1, 2])
    recs = by_key(records(tmp_path / "run"))
    assert len(recs) == 8 and summary["overhead"]["records_failed"] == 6
    assert recs[("4", "majority", 2)]["details"].get("error") is None


def test_a_refusal_that_is_the_same_for_every_problem_stops_the_run_unwritten(preset, tmp_path):
    with pytest.raises(UsageError, match="beam width"):  # budget 1 is below beam's width 4 on every problem
        bench(preset, tmp_path / "run", strategies=["majority", "beam"], budgets=[1])
    recs = records(tmp_path / "run")
    assert recs and {r["strategy"] for r in recs} == {"majority"}
    data = write_dataset(tmp_path / "d.jsonl", ["1+" * 3000 + "1"] * 2)  # fewer problems than the threshold
    with pytest.raises(UsageError, match="context"):
        bench(preset, tmp_path / "run2", data=data)
    assert (tmp_path / "run2" / SAMPLES).read_bytes() == b""


class ThreadSafeFakeSolver:
    """Stands in for Solver with an engine that serves several requests at once (finishing out of order)."""

    def __init__(self, models):
        self.preset = load_preset(models.preset)
        self.policy = SimpleNamespace(thread_safe=True)

    def solve(self, problem, strategy, budget, seed=0, sampling=None):
        time.sleep(random.random() * 0.01)
        cands = [
            Candidate(answer=str((len(problem) * 7 + i) % 3), text=f"{problem}/{i}", tokens=2) for i in range(budget)
        ]
        votes = Counter(c.answer for c in cands)
        return Result(
            answer=votes.most_common(1)[0][0], strategy=strategy, budget=budget, problem=problem, candidates=cands,
            spent=Spent(generations=budget, tokens_generated=2 * budget, wall_s=0.001), model="fake", prm=None,
            seed=seed, details={"votes": dict(votes), "no_answer": 0},
        )  # fmt: skip

    def close(self):
        pass


def test_concurrent_problems_give_the_same_records_as_one_at_a_time(preset, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_run, "Solver", ThreadSafeFakeSolver)
    bench(preset, tmp_path / "one", budgets=[1, 4])
    summary, _ = bench(preset, tmp_path / "four", budgets=[1, 4], concurrency=4)
    assert summary["overhead"]["concurrency"] == 4
    one, four = by_key(records(tmp_path / "one")), by_key(records(tmp_path / "four"))
    assert one.keys() == four.keys() and len(four) == 10
    assert all(same_record(one[k], four[k]) for k in one)


def test_concurrency_falls_back_to_one_on_the_local_engine_and_says_so(preset, tmp_path):
    summary, said = bench(preset, tmp_path / "run", budgets=[1], concurrency=3)
    assert summary["overhead"]["concurrency"] == 1 and "--concurrency 3 ignored" in said
