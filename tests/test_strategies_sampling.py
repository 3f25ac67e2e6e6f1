"""greedy and majority on the real engine: budgets are counted, and a majority run at budget k equals the
first k candidates of a run at a larger budget (what scaling curves from one run rely on)."""

from __future__ import annotations

from ttc.engine.base import SamplingParams
from ttc.presets import AnswerConfig, Preset, PromptConfig
from ttc.strategies import REGISTRY, SolveContext

PRESET = Preset(
    name="t",
    model="x",
    prompt=PromptConfig(template="Problem: {problem}\nSolution:\n"),
    step_delimiter="\n",
    answer=AnswerConfig(format="boxed", last_number_fallback=True),
)


def ctx(engine, budget: int, seed: int = 0) -> SolveContext:
    return SolveContext(
        problem="12+7",
        preset=PRESET,
        policy=engine,
        budget=budget,
        seed=seed,
        sampling=SamplingParams(temperature=1.0, max_tokens=10, seed=seed),
    )


def test_greedy_spends_one_generation(engine):
    r = REGISTRY["greedy"].run(ctx(engine, 8))
    assert r.spent.generations == 1 and len(r.candidates) == 1
    assert r.spent.tokens_generated == r.candidates[0].tokens > 0


def test_majority_spends_its_budget_and_counts_every_token(engine):
    r = REGISTRY["majority"].run(ctx(engine, 6))
    assert r.spent.generations == 6 and len(r.candidates) == 6
    assert r.spent.tokens_generated == sum(c.tokens for c in r.candidates)
    assert r.spent.flops == 2 * engine.info.n_params * (r.spent.prompt_tokens + r.spent.tokens_generated)
    assert sum(r.details["votes"].values()) + r.details["no_answer"] == 6


def test_majority_subset_equals_a_run_at_the_smaller_budget(engine):
    spec = REGISTRY["majority"]
    big = spec.run(ctx(engine, 8, seed=3))
    small = spec.run(ctx(engine, 4, seed=3))
    derived = spec.subset(big, 4)
    assert [c.text for c in derived.candidates] == [c.text for c in small.candidates]
    assert derived.answer == small.answer and derived.details["votes"] == small.details["votes"]
    assert derived.spent.tokens_generated == small.spent.tokens_generated
    assert derived.budget == 4 and derived.spent.generations == 4
