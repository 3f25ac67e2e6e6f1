"""Step-wise search and PRM scoring on the real engine with random tiny models: budgets are respected and
counted, branch bookkeeping is exact (a final beam's text is its steps joined, its scores equal a fresh
PRM scoring of that text), and bad settings are usage errors."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import make_tiny_gguf

from ttc.engine.base import SamplingParams
from ttc.engine.llama import LlamaEngine
from ttc.errors import UsageError
from ttc.presets import AnswerConfig, Preset, PRMConfig, PromptConfig, RevisionConfig
from ttc.prm import MathShepherdPRM, SelfJudgePRM
from ttc.prm.aggregate import last, mean, minimum, product
from ttc.strategies import REGISTRY, SolveContext

PRM_CFG = PRMConfig(model="x", template="Problem: {problem}\nSolution:\n", step_tag=" ки")
PRESET = Preset(
    name="t",
    model="x",
    prompt=PromptConfig(template="Problem: {problem}\nSolution:\n"),
    step_delimiter="a",  # a frequent byte of the random model, so steps are short
    answer=AnswerConfig(format="boxed", last_number_fallback=True),
    revision=RevisionConfig(
        template="Problem: {problem}\n{attempts}Solution:\n", attempt_template="Attempt {index}:\n{attempt}\n"
    ),
    prm=PRM_CFG,
)


@pytest.fixture(scope="module")
def prm(tmp_path_factory):
    path = make_tiny_gguf(tmp_path_factory.mktemp("prm") / "prm.gguf", seed=5, scale=2.0, user_tokens=("ки",))
    eng = LlamaEngine(str(path), n_threads=2)
    yield MathShepherdPRM(eng, PRM_CFG, PRESET.step_delimiter)
    eng.close()


def ctx(engine, prm, budget, **options) -> SolveContext:
    return SolveContext(
        problem="12+7",
        preset=PRESET,
        policy=engine,
        budget=budget,
        seed=1,
        sampling=SamplingParams(temperature=1.0, max_tokens=16, seed=1),
        prm=prm,
        options=options,
    )


def test_incremental_step_scores_equal_a_fresh_scoring(engine, prm):
    steps = ["12+7=19a", "19b a", "\\boxed{19}"]
    fresh = prm.score("12+7", [steps])[0]
    sc = prm.scorer("12+7", max_live=2, max_tokens=64)
    kid = sc.fork(0, 1)[0]
    sc.drop([0])
    got = [sc.add_steps([kid], [s])[0] for s in steps]
    sc.close()
    assert got == pytest.approx(fresh, abs=1e-3)
    assert all(0.0 <= x <= 1.0 for x in fresh)


@pytest.mark.parametrize("name", ["beam", "dvts", "lookahead", "particle-filter"])
def test_final_beams_are_their_steps_and_their_scores_are_fresh(engine, prm, name):
    r = REGISTRY[name].run(ctx(engine, prm, 8, width=4))
    assert r.candidates
    fresh = prm.score("12+7", [c.steps for c in r.candidates])
    for c, f in zip(r.candidates, fresh):
        assert "".join(c.steps) == c.text
        assert len(c.scores) == len(f)
        assert c.scores == pytest.approx(f, abs=2e-3)
        assert c.score == pytest.approx(last(c.scores))
    assert r.spent.prm_tokens > 0 and r.spent.tokens_generated > 0


@pytest.mark.parametrize("name", ["beam", "dvts", "lookahead", "particle-filter"])
def test_searches_stay_within_budget_on_every_run(engine, prm, name):
    """Counted from the engine's tokens: a search ends with one candidate per slot and never spends more
    than its budget. Here steps end at "," (about 3% of this random model's bytes) and some branches end
    early at EOS, so steps and solutions are very unequal: without `Search.commit`'s rule these runs spent
    up to 1.21x (beam), 1.24x (DVTS) and 1.15x (particle filter) their budget. The rule has to step in on
    some of them, or the test would not be testing it. The runs also end many branches at max_tokens."""
    preset = dataclasses.replace(PRESET, step_delimiter=",")
    swaps = 0
    for budget in (4, 8, 16):
        for seed in range(4):
            c = ctx(engine, prm, budget, width=4)
            c.preset, c.seed = preset, seed
            c.sampling = SamplingParams(temperature=1.0, max_tokens=64, seed=seed)
            r = REGISTRY[name].run(c)
            d = r.details
            slots = d["particles"] if name == "particle-filter" else d["groups"] * d["kept_per_group"] * d["width"]
            assert len(r.candidates) == slots, (budget, seed)
            assert r.spent.generations <= budget, (budget, seed, r.spent.generations)
            tokens = sum(x.tokens for x in r.candidates) / len(r.candidates)
            assert r.spent.generations == pytest.approx(r.spent.tokens_generated / tokens, abs=1e-3)
            swaps += d["budget_swaps"]
            # a beam near max_tokens does not cut the others' steps short: only its own room ends a beam
            assert all(x.tokens == 64 for x in r.candidates if x.finish_reason == "length"), (budget, seed)
    assert swaps > 0


def test_keep_best_keeps_the_slots():
    from ttc.strategies.search import Beam, keep_best

    beams = [Beam(i, i) for i in range(7)]
    values = {id(b): v for b, v in zip(beams, [0.1, 0.9, 0.5, 0.7, 0.2, 0.8, 0.3])}
    assert keep_best(beams, values, 4) == [0, 4, 0, 0, 0, 3, 0]  # ceil(7 / 4) = 2 kept: 4 + 3 copies
    assert keep_best(beams[:3], values, 4) == [0, 3, 0]
    assert keep_best(beams, values, 1) == [1] * 7


def test_prm_branches_evaluate_each_step_once(prm):
    """Scoring along a search tree costs the prefix once plus each new step's tokens once, forks included;
    the delimiter after a step's tag is paid only by branches that go on from it."""
    before = prm.usage.snapshot()
    sc = prm.scorer("12+7", max_live=8, max_tokens=64)
    kids = sc.fork(0, 3)
    sc.drop([0])
    steps1 = ["12+7=19\n", "12+7=18\n", "1\n"]
    sc.add_steps(kids, steps1)
    grand = sc.fork(kids[0], 3)  # kids[0] and two copies of it
    sc.drop(kids[1:])
    steps2 = ["\\boxed{19}", "19+0=19\n", "x\n"]
    sc.add_steps(grand, steps2)
    sc.close()
    spent = prm.usage - before
    prefix = len(prm.engine.tokenize(prm.prefix("12+7")))
    heads = sum(prm.piece(s)[1] + 1 for s in steps1 + steps2)  # up to and with each tag
    ids, at = prm.piece(steps1[0])
    assert len(ids) > at + 1  # the delimiter after kids[0]'s tag: paid by its 3 continuations, by no pruned kid
    assert spent.prompt_tokens == prefix + heads + 3 * (len(ids) - at - 1)


def test_a_tag_that_separates_steps_costs_no_extra_token(prm):
    """With `step_separator: ""` (the built-in PRM's layout) nothing follows a tag: each step costs its
    text and its tag, and a branch has nothing pending for its next step."""
    cfg = PRMConfig(model="x", template="P {problem}\n", step_tag="ки", step_separator="")
    compact = MathShepherdPRM(prm.engine, cfg, "\n")
    ids, at = compact.piece("12+7=19\n")
    assert at == len(ids) - 1 and prm.engine.detokenize(ids) == "12+7=19ки"
    before = compact.usage.snapshot()
    sc = compact.scorer("12+7", max_live=4, max_tokens=64)
    kids = sc.fork(0, 2)
    sc.drop([0])
    first = sc.add_steps(kids, ["12+7=19\n", "12+7=18\n"])
    second = sc.add_steps(kids, ["\\boxed{19}", "\\boxed{18}"])
    sc.close()
    spent = (compact.usage - before).prompt_tokens
    assert spent == len(prm.engine.tokenize(compact.prefix("12+7"))) + 2 * (8 + 11)
    fresh = compact.score("12+7", [["12+7=19\n", "\\boxed{19}"], ["12+7=18\n", "\\boxed{18}"]])
    assert [x for pair in zip(first, second) for x in pair] == pytest.approx(fresh[0] + fresh[1], abs=1e-3)


@pytest.mark.parametrize("name", ["best-of-n", "weighted-best-of-n", "majority", "adaptive"])
def test_sampled_strategies_stay_within_budget(engine, prm, name):
    r = REGISTRY[name].run(ctx(engine, prm, 8))
    assert r.spent.generations <= 8 and len(r.candidates) <= 8
    if REGISTRY[name].needs_prm:
        assert all(c.scores and c.score is not None for c in r.candidates)


def test_revise_spends_chains_times_attempts(engine, prm):
    r = REGISTRY["revise"].run(ctx(engine, prm, 8, sequential=4))
    assert r.details["chains"] == 2 and r.details["sequential"] == 4 and len(r.candidates) == 8


def test_width_must_fit_the_budget(engine, prm):
    with pytest.raises(UsageError, match="below the beam width"):
        REGISTRY["beam"].run(ctx(engine, prm, 2, width=4))
    c = ctx(engine, prm, 10, width=4)
    r = REGISTRY["beam"].run(c)
    assert any("using 8" in n for n in c.notes) and r.details["notes"]


def test_prm_tokens_must_be_single_tokens(prm):
    bad = PRMConfig(model="x", template="{problem}", step_tag=" ки", good_token="good")
    with pytest.raises(UsageError, match="good token 'good' is not a single token"):
        MathShepherdPRM(prm.engine, bad, "\n")
    with pytest.raises(UsageError, match="step tag"):
        MathShepherdPRM(prm.engine, PRMConfig(model="x", step_tag=" <step>"), "\n")
    with pytest.raises(UsageError, match="aggregation"):
        MathShepherdPRM(prm.engine, PRMConfig(model="x", aggregation="median"), "\n")


def test_self_judge_scores_with_the_policy(engine):
    sj = SelfJudgePRM(engine, lambda p: f"Problem: {p}\nSolution:\n")
    scores = sj.score("1+1", [["1+1=2\n", "\\boxed{2}"], ["x"]])
    assert [len(s) for s in scores] == [2, 1] and all(0 <= x <= 1 for s in scores for x in s)
    assert sj.usage.prompt_tokens > 0


def test_aggregations():
    s = [0.9, 0.5, 0.8]
    assert (last(s), minimum(s), mean(s)) == (0.8, 0.5, pytest.approx(2.2 / 3))
    assert product(s) == pytest.approx(0.36)
    assert last([]) == minimum([]) == product([]) == mean([]) == 0.0


def test_the_presets_stop_strings_end_a_search_branch_even_across_steps(tmp_path):
    """A base model's few-shot preset stops whole solutions at the next "Problem:"; step-wise search must stop
    there too (a stop can span steps: the step delimiter is a newline, the stop "\\nProblem:")."""
    from conftest import make_tiny_gguf

    from ttc.solve import ModelOptions, SamplingOverrides, Solver

    model = make_tiny_gguf(tmp_path / "m.gguf", seed=11, scale=1.0)
    preset = tmp_path / "p.yaml"
    preset.write_text(
        f"model: {model}\nprompt:\n  format: raw\n  template: 'Q: {{problem}}\\n'\nstep_delimiter: \"\\n\"\n"
        "stop: ['^', '#', 'h', 'Z', 'L', 'C', '7', '-', '!', 'e', 'a', 'o', 'i']\n"
        "answer:\n  format: boxed\n  last_number_fallback: true\nsampling:\n  max_tokens: 40\n"
    )
    solver = Solver(ModelOptions(preset=str(preset), threads=2))
    try:
        for name in ("beam", "dvts", "particle-filter"):
            r = solver.solve("1+1", name, 4, sampling=SamplingOverrides(max_tokens=40))
            assert r.spent.generations <= 4
            for c in r.candidates:
                assert not any(x in c.text for x in "^#hZLC7-!eaoi"), (name, c.text)
            assert any(c.finish_reason == "stop" for c in r.candidates), name
    finally:
        solver.close()


def test_a_stop_string_that_spans_steps_cuts_the_new_step():
    from types import SimpleNamespace

    from ttc.strategies.search import Search

    host = SimpleNamespace(ctx=SimpleNamespace(sampling=SimpleNamespace(stop=("\nProblem:", "\n\nProblem:"))))
    beam = SimpleNamespace(steps=["4 * 2 = 8\n", "The answer is \\boxed{8}.\n"])
    text = ["Problem: What is 1 + 1?\n"]
    assert Search.cut_at_stop(host, beam, 0, text) and text == [""]  # the stop began in the step before
    text = ["3 + 8 = 11\nProblem: next"]
    assert Search.cut_at_stop(host, SimpleNamespace(steps=[]), 0, text) and text == ["3 + 8 = 11"]
    text = ["no stop here\n"]
    assert not Search.cut_at_stop(host, beam, 0, text) and text == ["no stop here\n"]
