"""The bench's statistics alone: Wilson intervals and paired comparisons against published and hand-computed
values, scipy where it is installed, seeded simulations of their coverage, and properties that must hold
for any counts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttc.bench.paired import compare_cells, parse_pairs
from ttc.bench.stats import Paired, mcnemar_exact, pair, wilson
from ttc.bench.summary import summarize
from ttc.errors import UsageError


def test_wilson_of_217_of_300_is_the_hand_computed_interval():
    # z = 1.959964, z^2 = 3.841459, p = 217/300 = 0.723333; denominator 1 + z^2/n = 1.012805;
    # centre (p + z^2/2n) / 1.012805 = 0.720510; half-width z sqrt(p(1-p)/n + z^2/4n^2) / 1.012805 = 0.050379
    lo, hi = wilson(217, 300)
    assert lo == pytest.approx(0.720510 - 0.050379, abs=2e-6)
    assert hi == pytest.approx(0.720510 + 0.050379, abs=2e-6)


def test_wilson_at_the_edges_reaches_zero_and_one_and_knows_nothing_of_no_problems():
    assert wilson(0, 10) == (0.0, pytest.approx(0.2775328, abs=1e-6))  # z^2 / (n + z^2)
    assert wilson(10, 10) == (pytest.approx(0.7224672, abs=1e-6), 1.0)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(4, 3)


def test_wilson_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(0, 1), (1, 3), (5, 17), (217, 300), (214, 300), (299, 300), (40, 40)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson(k, n) == (pytest.approx(ci.low, abs=1e-9), pytest.approx(ci.high, abs=1e-9))


def test_mcnemar_exact_p_values():
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # all five discordant problems one way
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    # 2 * sum_{i<=6} C(22, i) / 2^22 = 2 * 110056 / 4194304
    assert mcnemar_exact(6, 16) == pytest.approx(2 * 110056 / 4194304) == mcnemar_exact(16, 6)


def test_mcnemar_matches_scipys_binomial_test():
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(1, 0), (6, 16), (20, 17), (3, 11), (40, 60)]:
        assert mcnemar_exact(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_newcombe_paired_interval_matches_the_published_example():
    # Cavo et al. 2012 as worked in Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables
    # (2017), ch. 8: 59 both, 6 only before, 16 only after, 80 neither: -0.0621 (95% CI -0.1186 to -0.0046).
    p = Paired(both=59, b=6, c=16, neither=80)
    assert p.n == 161 and p.difference == pytest.approx(-0.0621, abs=5e-5)
    lo, hi = p.interval()
    assert lo == pytest.approx(-0.1186, abs=5e-5) and hi == pytest.approx(-0.0046, abs=5e-5)


def test_pair_counts_only_the_problems_both_cells_answered():
    a = {"1": True, "2": True, "3": False, "4": False, "5": True}
    b = {"1": True, "2": False, "3": True, "4": False, "6": False}
    assert pair(a, b) == Paired(both=1, b=1, c=1, neither=1)


def _coverage(simulate, truth: float, runs: int, seed: int) -> float:
    rng = random.Random(seed)
    hits = 0
    for _ in range(runs):
        lo, hi = simulate(rng)
        hits += lo <= truth <= hi
    return hits / runs


def test_wilson_covers_the_true_accuracy_about_95_percent_of_the_time():
    n, p = 300, 0.72

    def sim(rng):
        return wilson(sum(rng.random() < p for _ in range(n)), n)

    assert 0.93 <= _coverage(sim, p, 2000, seed=1) <= 0.97


def test_the_paired_interval_covers_the_true_difference_about_95_percent_of_the_time():
    # Two correlated cells on 300 problems: P(both) 0.62, P(only a) 0.10, P(only b) 0.07, P(neither) 0.21.
    n, probs = 300, (0.62, 0.10, 0.07, 0.21)

    def sim(rng):
        counts = [0, 0, 0, 0]
        for _ in range(n):
            u, acc = rng.random(), 0.0
            for i, q in enumerate(probs):
                acc += q
                if u < acc or i == 3:
                    counts[i] += 1
                    break
        return Paired(*counts).interval()

    assert 0.93 <= _coverage(sim, probs[1] - probs[2], 1500, seed=2) <= 0.975


counts = st.integers(min_value=0, max_value=400)


@given(counts, counts)
def test_wilson_holds_the_estimate_within_zero_and_one(k, extra):
    n = k + extra
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= hi <= 1.0
    if n:
        assert lo <= k / n <= hi


@given(st.integers(min_value=0, max_value=50), st.integers(min_value=1, max_value=50))
def test_wilson_narrows_as_the_same_accuracy_is_seen_on_more_problems(k, extra):
    n = k + extra
    widths = [wilson(k * m, n * m) for m in (1, 2, 4, 16)]
    widths = [hi - lo for lo, hi in widths]
    assert all(w2 < w1 for w1, w2 in zip(widths, widths[1:]))


@given(counts, counts, counts, counts)
def test_the_paired_interval_holds_the_difference_and_flips_with_the_cells(both, b, c, neither):
    p = Paired(both, b, c, neither)
    lo, hi = p.interval()
    assert -1.0 <= lo <= hi <= 1.0
    assert lo - 1e-12 <= p.difference <= hi + 1e-12
    lo2, hi2 = Paired(both, c, b, neither).interval()
    assert lo2 == pytest.approx(-hi, abs=1e-12) and hi2 == pytest.approx(-lo, abs=1e-12)
    assert 0.0 < p.p_value <= 1.0 and p.p_value == mcnemar_exact(c, b)


@given(st.integers(min_value=1, max_value=300), st.integers(min_value=0, max_value=300))
def test_two_cells_that_always_agree_differ_by_an_interval_around_zero(both, neither):
    lo, hi = Paired(both, 0, 0, neither).interval()
    assert lo <= 0.0 <= hi and Paired(both, 0, 0, neither).p_value == 1.0


def test_summaries_carry_the_interval_of_every_accuracy():
    rows = [
        {"id": str(i), "strategy": "majority", "budget": 4, "correct": i < 7, "tokens": 10, "wall_s": 0.1,
         "generations": 4, "difficulty": {"ops": 1 + i % 2}, "derived": False}
        for i in range(10)
    ]  # fmt: skip
    s = summarize(rows)
    cell = s["by_budget"][0]
    assert (cell["correct"], cell["n"]) == (7, 10)
    assert (cell["accuracy_low"], cell["accuracy_high"]) == tuple(pytest.approx(x, abs=1e-6) for x in wilson(7, 10))
    for row in s["by_difficulty"]["ops"]:
        assert (row["accuracy_low"], row["accuracy_high"]) == tuple(
            pytest.approx(x, abs=1e-6) for x in wilson(row["correct"], row["n"])
        )
    assert "Wilson" in s["interval"]


def test_compare_cells_reports_the_discordant_problems():
    rows = [
        {"id": str(i), "strategy": s, "budget": b, "correct": ok}
        for i, (x, y) in enumerate([(1, 1), (1, 0), (1, 0), (0, 1), (0, 0)])
        for s, b, ok in (("auto", 16, bool(x)), ("weighted-best-of-n", 64, bool(y)))
    ]
    [e] = compare_cells(rows, parse_pairs(["auto@16,weighted-best-of-n@64"]))
    assert (e["first"], e["second"], e["n"]) == ("auto@16", "weighted-best-of-n@64", 5)
    assert (e["both_right"], e["only_first_right"], e["only_second_right"], e["neither_right"]) == (1, 2, 1, 1)
    assert e["difference"] == pytest.approx(0.2) and e["mcnemar_p"] == pytest.approx(1.0)
    assert e["difference_low"] < 0.2 < e["difference_high"]


@pytest.mark.parametrize(
    "spec,needle",
    [("auto16,majority@4", "STRATEGY@BUDGET"), ("auto@16", "two cells"), ("a@1,b@2,c@3", "two cells"),
     ("auto@0,majority@4", "STRATEGY@BUDGET"), ("@4,majority@4", "STRATEGY@BUDGET"),
     ("auto@x,majority@4", "STRATEGY@BUDGET"), ("auto@4,auto@4", "itself")],
)  # fmt: skip
def test_a_malformed_pair_is_a_usage_error_naming_it(spec, needle):
    with pytest.raises(UsageError, match=needle) as e:
        parse_pairs([spec])
    assert spec in str(e.value) and "\n" not in str(e.value)


def test_a_strategy_variant_with_colons_and_equals_is_one_cell():
    assert parse_pairs(["beam:width=2@16,beam:width=4@16"]) == [(("beam:width=2", 16), ("beam:width=4", 16))]
