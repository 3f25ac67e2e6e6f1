"""One total for a whole file (`--total-budget`, `--total-tokens`): the total is never exceeded in any way of
splitting it, in generations or in tokens; the same inputs give the same allocation; the plan follows the
calibrated curves; uniform at k per problem is weighted best-of-N at k (the same samples); a resumed run ends
with the records of an uninterrupted one and draws no sample twice; `ttc solve -` answers each line within
the total; bad flags are one-line usage errors."""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import pytest
from conftest import one_line_error, run_ttc
from rich.console import Console

from ttc.bench import BenchOptions, run_bench
from ttc.bench.store import SAMPLES
from ttc.bench.total import STREAMS, run_total
from ttc.policy import load_policy
from ttc.policy.allocate import MODES, PRIOR_CURVES, Allocator, Budget, curves_of, flip_chance, hull, plan
from ttc.policy.prior import prior_policy
from ttc.record import Candidate
from ttc.solve import ModelOptions

REPO = Path(__file__).resolve().parent.parent
ARITH = Path(__file__).resolve().parent / "fixtures" / "arith_head.jsonl"
POLICY = REPO / "presets" / "policies" / "tiny-arith.yaml"


def fake_streams(n: int, seed: int, max_tokens: int = 50):
    """Per problem an endless stream of scored candidates (answers from a few, tokens up to max_tokens)."""
    rng = random.Random(seed)
    streams = {}

    def draw(i: int, start: int, k: int) -> list[Candidate]:
        s = streams.setdefault(i, [])
        while len(s) < start + k:
            a = str(rng.choice([0, 0, 0, 1, 2]) if i % 2 else rng.choice([0, 1, 2, 3, 4]))
            s.append(Candidate(answer=a, text=a, score=rng.random(), tokens=rng.randint(1, max_tokens)))
        return s[start : start + k]

    return draw


@pytest.mark.parametrize("unit", ["generations", "tokens"])
@pytest.mark.parametrize("mode", MODES)
def test_no_way_of_splitting_ever_spends_more_than_the_total(mode, unit):
    policy = load_policy(POLICY)
    for seed in range(12):
        rng = random.Random(seed)
        n = rng.randint(1, 30)
        total = rng.randint(n, 40 * n) if unit == "generations" else rng.randint(50 * n, 2000 * n)
        budget = Budget(total, unit, max_tokens=50)
        ps = Allocator(policy, curves_of(policy)).run(mode, n, fake_streams(n, seed), budget)
        used = sum(len(p.cands) for p in ps) if unit == "generations" else sum(c.tokens for p in ps for c in p.cands)
        assert used == budget.spent <= total
        assert all(len(p.cands) >= 1 for p in ps) or mode == "stream"


def test_the_same_inputs_give_the_same_allocation():
    policy = load_policy(POLICY)
    runs = [
        [len(p.cands) for p in Allocator(policy, curves_of(policy)).run(m, 20, fake_streams(20, 3), Budget(300))]
        for m in MODES
        for _ in range(2)
    ]
    assert all(runs[i] == runs[i + 1] for i in range(0, len(runs), 2))


def test_uniform_gives_every_problem_the_same_and_the_remainder_to_the_first():
    ps = Allocator(prior_policy(True), PRIOR_CURVES).run("uniform", 7, fake_streams(7, 0), Budget(7 * 8 + 3))
    assert [len(p.cands) for p in ps] == [9, 9, 9, 8, 8, 8, 8]


def test_the_plan_spends_where_the_curve_rises_most_and_never_past_the_cap():
    curves = {lv: {4: 0.5, 64: 0.5} for lv in (1, 2, 3, 4, 5)}
    curves[3] = {4: 0.3, 8: 0.6, 16: 0.65}  # rises fast to 8, then slowly
    targets = plan([1, 3, 1, 3], [4, 4, 4, 4], 10, curves, cap=16)
    assert targets[1] + targets[3] - 8 >= 8 and sum(targets) == 26  # the steep part first, all spent
    assert max(plan([3, 3], [4, 4], 100, curves, cap=12)) == 12
    segs = hull({4: 0.2, 8: 0.25, 16: 0.26, 32: 0.33, 64: 0.43}, 4)
    assert [s for _, s in segs] == sorted((s for _, s in segs), reverse=True)  # concave: falling slopes


def test_an_easy_level_of_the_calibrated_policy_gets_no_more_than_its_estimation_samples():
    policy = load_policy(POLICY)
    targets = plan([1, 5, 3], [4, 4, 4], 40, curves_of(policy), cap=64)
    assert targets[0] == 4 and targets[1] + targets[2] == 48


def test_an_agreeing_confident_pool_is_less_likely_to_flip_than_a_split_one():
    agree = [Candidate(answer="7", text="", score=0.95) for _ in range(8)]
    split = [Candidate(answer=str(i % 2), text="", score=0.6) for i in range(8)]
    doubtful = [Candidate(answer="7", text="", score=0.2) for _ in range(4)]
    assert flip_chance(agree, 8) < 0.01 < flip_chance(doubtful, 8) < flip_chance(split, 8) <= 0.5
    assert flip_chance(agree, 0) == 0.0


# --- the real thing: the built-in pair ---------------------------------------------------------------------


def bench(out: Path, **kw) -> dict:
    opts = BenchOptions(data=str(ARITH), out=str(out), models=ModelOptions(threads=1), **kw)
    run = run_total if opts.total_budgets else run_bench
    return run(opts, console=Console(file=io.StringIO(), width=200))


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def total_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("total") / "run"
    bench(out, total_budgets=[20, 40])
    return out


def test_uniform_at_k_per_problem_is_weighted_best_of_n_at_k(total_run, tmp_path):
    bench(tmp_path / "wbon", strategies=["weighted-best-of-n"], budgets=[8])
    wbon = {r["id"]: r for r in lines(tmp_path / "wbon" / SAMPLES)}
    uni = [r for r in lines(total_run / SAMPLES) if r["strategy"] == "uniform" and r["budget"] == 40]
    assert len(uni) == 5
    for r in uni:
        assert [c["text"] for c in r["candidates"]] == [c["text"] for c in wbon[r["id"]]["candidates"]]
        # PRM scores agree to batching noise: the stream scores its samples in other batches than one run at 8
        assert [c["score"] for c in r["candidates"]] == pytest.approx(
            [c["score"] for c in wbon[r["id"]]["candidates"]], abs=2e-3
        )
        assert r["answer"] == wbon[r["id"]]["answer"]


def test_records_show_the_spend_of_each_problem_and_no_cell_spends_more_than_its_total(total_run):
    recs = lines(total_run / SAMPLES)
    assert {(r["strategy"], r["budget"]) for r in recs} == {(m, t) for m in MODES for t in (20, 40)}
    for m in MODES:
        for t in (20, 40):
            cell = [r for r in recs if (r["strategy"], r["budget"]) == (m, t)]
            spent = sum(r["spent"]["generations"] for r in cell)
            assert spent <= t and all(r["spent"]["generations"] == len(r["candidates"]) for r in cell)
            assert all(r["details"]["allocation"]["samples"] == len(r["candidates"]) for r in cell)
    summary = json.loads((total_run / "summary.json").read_text())
    rows = summary["allocation"]["rows"]
    assert {(r["mode"], r["total"]) for r in rows} == {(m, t) for m in MODES for t in (20, 40)}
    assert all(r["spent_generations"] <= r["total"] for r in rows)


def test_a_killed_run_resumes_to_the_same_records_without_drawing_a_sample_twice(total_run, tmp_path):
    out = tmp_path / "killed"
    shutil.copytree(total_run, out)
    recs = (out / SAMPLES).read_text().splitlines(keepends=True)
    (out / SAMPLES).write_text("".join(recs[:7]))  # a kill after the first cell and a bit
    streams = (out / STREAMS).read_text().splitlines(keepends=True)
    (out / STREAMS).write_text("".join(streams[:-2]) + streams[-2][:30])  # the last draw lost, one cut in half
    summary = bench(out, total_budgets=[20, 40], resume=True)
    drawn = summary["overhead"]["samples_drawn"]
    assert 0 < drawn <= 2 * 16 and summary["overhead"]["samples_read_back"] > 0

    def key(r):
        return (r["id"], r["strategy"], r["budget"])

    want = {key(r): r for r in lines(total_run / SAMPLES)}
    got = {key(r): r for r in lines(out / SAMPLES)}
    assert set(got) == set(want) and len(lines(out / SAMPLES)) == len(want)
    for k, r in want.items():
        assert [c["text"] for c in got[k]["candidates"]] == [c["text"] for c in r["candidates"]]
        assert (got[k]["answer"], got[k]["details"]) == (r["answer"], r["details"])


def test_a_token_total_is_never_exceeded_on_the_real_engine_and_a_finished_run_is_summarized_again(tmp_path):
    out = tmp_path / "tokens"
    total = 5 * 192 * 3  # three solutions' worth of max_tokens per problem
    summary = bench(out, total_budgets=[total], total_unit="tokens", total_ways=["uniform", "allocator+online"])
    rows = summary["allocation"]["rows"]
    assert {r["mode"] for r in rows} == {"uniform", "allocator+online"}
    assert all(0 < r["spent_tokens"] <= total for r in rows)
    cells = {}
    for r in lines(out / SAMPLES):
        cells[r["strategy"]] = cells.get(r["strategy"], 0) + r["spent"]["tokens_generated"]
    assert all(v <= total for v in cells.values())
    r = run_ttc("bench", str(out))
    assert r.returncode == 0 and "allocator+online" in r.stderr.decode(), r.stderr.decode()


def test_solve_stdin_answers_every_line_within_the_total():
    problems = [json.loads(x)["problem"] for x in ARITH.read_text().splitlines()]
    stdin = ("\n".join(problems[:3]) + "\n\n" + problems[3] + "\n").encode()
    r = run_ttc("solve", "-", "--total-budget", "30", "--json", "--threads", "1", stdin=stdin)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode().splitlines()
    assert len(out) == 5 and out[3] == ""
    recs = [json.loads(x) for x in out if x]
    assert sum(x["spent"]["generations"] for x in recs) <= 30
    assert all(x["details"]["allocation"]["mode"] == "stream" for x in recs)
    assert "spent" in r.stderr.decode()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["bench", str(ARITH), "--total-budget", "3"], "below one generation"),
        (["bench", str(ARITH), "--total-budget", "40", "--strategies", "majority,auto"], "drop --strategies"),
        (["bench", str(ARITH), "--total-budget", "40", "--total-tokens", "9000"], "do not go together"),
        (["bench", str(ARITH), "--total-budget", "4x"], "--total-budget takes positive integers"),
        (["solve", "12+7", "--total-budget", "40"], "pass '-'"),
    ],
)
def test_bad_total_flags_are_one_line_usage_errors(args, needle, tmp_path):
    one_line_error(run_ttc(*args, "--out", str(tmp_path / "o")) if args[0] == "bench" else run_ttc(*args), 2, needle)


def test_a_preset_without_a_calibrated_policy_plans_on_the_documented_prior():
    assert curves_of(None) is PRIOR_CURVES
    policy = prior_policy(True)  # levels from the answer agreement of the first 4 samples
    budget = Budget(10 * 12)
    ps = Allocator(policy, curves_of(None)).run("allocator", 10, fake_streams(10, 5), budget)
    assert budget.spent == 120 and {p.level for p in ps} <= {1, 2, 3, 4, 5}
    by_level = {}
    for p in ps:
        by_level.setdefault(p.level, []).append(len(p.cands))
    easiest, hardest = min(by_level), max(by_level)
    assert easiest == hardest or max(by_level[easiest]) <= min(by_level[hardest])
