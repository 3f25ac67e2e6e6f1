"""Every strategy on the shipped model pair (the real policy and PRM through llama.cpp): it stays within its
budget (counted from the engines' usage, not assumed), solves easy problems, and beats greedy on a fixed
suite of harder ones with fixed seeds.

The margins asserted are a safe part of what was measured when the pair was shipped (MEASURED below, the
same suite and seeds, 2 threads); sampling on another CPU build can differ in the last bits, so a strategy
is asked to beat greedy by about half its measured margin, never by all of it.
"""

from __future__ import annotations

import pytest

from ttc.builtin.arith import evaluate, generate_problems, heldout_problems
from ttc.solve import ModelOptions, Solver

pytest.importorskip("llama_cpp")

BUDGET = 8
EASY = ["12+7", "45-3", "30+30"]
# 48 problems with 3 to 5 operators (where a verifier helps most), none of the shipped 500
SUITE = [p for k in (3, 4, 5) for p in generate_problems(16, ops=k, seed=4242 + k, exclude=heldout_problems())]

# Measured with the shipped pair (seed i for problem i, budget 8, 2 threads): problems of SUITE right, out of
# 48; greedy gets 29. All solved the 3 easy problems.
GREEDY_MEASURED = 29
MEASURED = {
    "majority": 26, "best-of-n": 32, "weighted-best-of-n": 35, "beam": 36, "lookahead": 29, "dvts": 34,
    "particle-filter": 34, "revise": 32, "adaptive": 25, "auto": 32,
}  # fmt: skip
BELOW_GREEDY = {
    "majority": "the policy's mistakes are mostly systematic: on the first 300 of the shipped 500, majority@16 "
    "is 58.7%, greedy 55.3%",
    "adaptive": "it votes like majority (and stops early)",
    "lookahead": "its rollouts take part of the budget and it leaves some unspent; on the first 300 of the shipped "
    "500 it is 49.3% at budget 4 and 61.7% at 16 (greedy 55.3%)",
}


@pytest.fixture(scope="module")
def solver():
    s = Solver(ModelOptions(preset="tiny-arith", threads=2))
    yield s
    s.close()


def right_on(solver, problems, name: str, budget: int) -> tuple[int, list]:
    results = [solver.solve(p, name, budget, seed=i) for i, p in enumerate(problems)]
    return sum(r.answer == str(evaluate(p)) for p, r in zip(problems, results)), results


@pytest.fixture(scope="module")
def runs(solver):
    """Every strategy's results on SUITE and EASY, computed once."""
    out = {"greedy": right_on(solver, SUITE, "greedy", 1)}
    for name in MEASURED:
        out[name] = (right_on(solver, SUITE, name, BUDGET), right_on(solver, EASY, name, BUDGET))
    return out


@pytest.mark.parametrize("name", list(MEASURED))
def test_strategy_stays_within_its_budget(runs, name):
    (_, results), (_, easy) = runs[name]
    for r in results + easy:
        # sampled strategies count whole samples; searches count tokens over the mean finished length, kept
        # within the budget on every problem by their slots and commit rule (ttc/strategies/search.py)
        assert r.spent.generations <= BUDGET, (r.problem, r.spent)
        assert r.spent.tokens_generated > 0
        if name not in ("majority", "adaptive"):
            assert r.spent.prm_tokens > 0


@pytest.mark.parametrize("name", list(MEASURED))
def test_strategy_solves_easy_problems(runs, name):
    _, (right, _) = runs[name]
    assert right == len(EASY)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(reason=f"measured {MEASURED[n]} vs greedy's 29: {BELOW_GREEDY[n]}"))
        if MEASURED[n] <= GREEDY_MEASURED
        else n
        for n in MEASURED
    ],
)
def test_strategy_beats_greedy_on_the_suite(runs, name):
    (right, _), _ = runs[name]
    greedy, _ = runs["greedy"]
    assert greedy == GREEDY_MEASURED
    # at least half the margin measured (2 to 6 problems of 48), never all of it
    assert right >= greedy + max(1, (MEASURED[name] - GREEDY_MEASURED) // 2), (name, right, greedy)
