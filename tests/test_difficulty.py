"""`ttc difficulty`: Spearman's rho as a pure function, the dataset check on the built-in pair (levels and
true pass rates, cross-checked against a plain majority run), and its bad input."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, one_line_error, run_ttc
from hypothesis import given
from hypothesis import strategies as st

from ttc.bench.run import grade_answer
from ttc.policy.difficulty import PASS_SEED_OFFSET, ranks, spearman

FIXTURE = REPO / "tests" / "fixtures" / "arith_head.jsonl"


def test_ranks_share_ties():
    assert ranks([3.0, 1.0, 1.0, 2.0]).tolist() == [4.0, 1.5, 1.5, 3.0]


def test_spearman_extremes_and_degenerate_input():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2], [1, 2]) is None


@given(st.lists(st.integers(-1000, 1000), min_size=3, max_size=30, unique=True), st.randoms())
def test_spearman_matches_the_closed_form_without_ties(xs, rnd):
    ys = list(xs)
    rnd.shuffle(ys)
    n = len(xs)
    rx, ry = ranks(xs), ranks(ys)
    closed = 1 - 6 * float(((rx - ry) ** 2).sum()) / (n * (n * n - 1))
    assert spearman(xs, ys) == pytest.approx(closed, abs=1e-9)


@given(st.lists(st.integers(-50, 50), min_size=3, max_size=30), st.lists(st.integers(-9, 9), min_size=30, max_size=30))
def test_spearman_ignores_monotone_transforms(xs, ys):
    ys = ys[: len(xs)]
    rho = spearman(xs, ys)
    again = spearman([x**3 + 7 for x in xs], [2 * y - 1 for y in ys])
    assert (rho is None and again is None) or rho == pytest.approx(again, abs=1e-9)


def test_dataset_check_on_the_builtin_pair():
    r = run_ttc(
        "difficulty", "--data", str(FIXTURE), "--samples", "4", "--pass-samples", "8", "--threads", "2", "--json",
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    report = json.loads(r.stdout)
    rows = report["rows"]
    lines = [json.loads(x) for x in FIXTURE.read_text().splitlines()]
    assert [row["id"] for row in rows] == [x["id"] for x in lines]
    assert all(row["level"] in (1, 2, 3, 4, 5) for row in rows)
    assert all(abs(row["pass_rate"] * 8 - round(row["pass_rate"] * 8)) < 1e-6 for row in rows)
    assert set(report["spearman"]) == {"level", "mean_score", "agreement"}
    assert sum(v["problems"] for v in report["by_level"].values()) == len(rows)
    # The pass rate is the share of right answers among a majority run's samples at the offset seed.
    first = lines[0]
    m = run_ttc(
        "solve", first["problem"], "--strategy", "majority", "--budget", "8", "--seed", str(PASS_SEED_OFFSET),
        "--threads", "2", "--json",
    )  # fmt: skip
    cands = json.loads(m.stdout)["candidates"]
    right = sum(grade_answer(c["answer"], str(first["answer"])) for c in cands)
    assert rows[0]["pass_rate"] == pytest.approx(right / 8)
    # Without --json: one level per problem on stdout, the correlation on stderr.
    plain = run_ttc("difficulty", "--data", str(FIXTURE), "--limit", "2", "--samples", "4", "--pass-samples", "2")
    assert plain.returncode == 0 and plain.stdout.decode().split() == [str(row["level"]) for row in rows[:2]]
    assert "Spearman" in plain.stderr.decode()


def test_dataset_check_bad_input(tmp_path):
    data = tmp_path / "noanswers.jsonl"
    data.write_text("\n".join(json.dumps({"problem": f"{i}+1", "answer": ""}) for i in range(3)) + "\n")
    one_line_error(run_ttc("difficulty", "--data", str(data), "--samples", "2"), 2, "'answer' is empty")
    one_line_error(run_ttc("difficulty", "1+2", "--data", str(FIXTURE)), 2, "not both")
    one_line_error(run_ttc("difficulty", "--data", str(FIXTURE), "--pass-samples", "0"), 2, "--pass-samples")
    one_line_error(run_ttc("difficulty", "1+2", "--samples", "0"), 2, "positive integer")
