"""Self-judging at linear cost, on the real engine with a tiny random model: a step is judged on a fork of the
branch that holds the problem and the steps so far, so the PRM evaluates the prompt once, each step's
tokens once and the question once per step scored (counted from the engine, exactly), and the scores equal
those of judging each step's whole text in one fresh evaluation (the old method, quadratic in the steps)."""

from __future__ import annotations

import pytest

from ttc.engine.base import SamplingParams
from ttc.engine.llama import LlamaEngine
from ttc.presets import AnswerConfig, Preset, PromptConfig
from ttc.prm import SelfJudgePRM, two_way
from ttc.prm import selfjudge as selfjudge_module
from ttc.prompts import problem_prompt
from ttc.strategies import REGISTRY, SolveContext

PRESET = Preset(
    name="t",
    model="x",
    prompt=PromptConfig(template="Problem: {problem}\nSolution:\n"),
    step_delimiter="a",  # a frequent byte of the random model, so steps are short
    answer=AnswerConfig(format="boxed", last_number_fallback=True),
)
PROBLEM = "12+7"
SOLUTIONS = [
    ["12+7=19\n", "19 \n", "\\boxed{19}"],
    ["x  ", "\n", "   ", "y\n"],  # blank steps: the judge reads the same text again
    ["\n", "12+7=19\n"],  # a blank first step: its whitespace goes with the next one
    ["one step, no delimiter"],
    [],
]


@pytest.fixture(scope="module")
def engine(tiny_gguf):
    """The tiny model with flash attention off: the judge's forks and the old method's one evaluation decode
    in different batches, and this sharp random model turns flash attention's other rounding (on for large
    decodes, off for small ones, under `auto`) into differences of up to 3e-3 in a score."""
    eng = LlamaEngine(str(tiny_gguf), n_threads=2, flash_attn="off")
    yield eng
    eng.close()


def judge(engine) -> SelfJudgePRM:
    return SelfJudgePRM(engine, lambda p: problem_prompt(PRESET, engine, p))


def fresh(sj: SelfJudgePRM, problem: str, steps: list[str]) -> list[float]:
    """The old method: for each step, the whole text so far plus the question, evaluated afresh."""
    suffixes = ["".join(steps[:k]).rstrip() + sj.question for k in range(1, len(steps) + 1)]
    if not suffixes:
        return []
    lps = sj.engine.logprobs_at(sj.prompt_for(problem), suffixes, [[-1]] * len(suffixes), [sj.yes_id, sj.no_id])
    return [two_way(lp[0][0], lp[0][1]) for lp in lps]


def expected_tokens(sj: SelfJudgePRM, problem: str, solutions) -> int:
    """prompt once + every step's tokens once + the question once per step scored"""
    read = sum(len(p) for steps in solutions for p in sj.pieces(steps))
    steps = sum(len(s) for s in solutions)
    return len(sj.engine.tokenize(sj.prompt_for(problem))) + read + len(sj.question_ids) * steps


def test_the_pieces_concatenate_to_the_old_rendering(engine):
    """On this byte-level vocabulary the pieces are exactly the whole text's tokens, so the judge reads the
    same tokens as the old method did."""
    sj = judge(engine)
    for steps in SOLUTIONS:
        held, ids = "", []
        for k, s in enumerate(steps, 1):
            piece, held = sj.piece(held, s)
            ids += piece
            whole = sj.engine.tokenize("".join(steps[:k]).rstrip() + sj.question, add_bos=False, special=False)
            assert ids + sj.question_ids == whole, (steps, k)


def test_score_equals_the_old_method_and_reads_each_solution_once(engine):
    sj = judge(engine)
    before = sj.usage.snapshot()
    got = sj.score(PROBLEM, SOLUTIONS)
    spent = sj.usage - before
    assert spent.prompt_tokens == expected_tokens(sj, PROBLEM, SOLUTIONS)
    assert spent.generated_tokens == 0
    assert [len(s) for s in got] == [len(s) for s in SOLUTIONS]
    for steps, g in zip(SOLUTIONS, got):
        assert g == pytest.approx(fresh(sj, PROBLEM, steps), abs=1e-5)
    assert got[1][1] == pytest.approx(got[1][0], abs=1e-5)  # a blank step: the same text judged again
    assert len({round(x, 4) for s in got for x in s}) > 3  # the scores do depend on the text


def test_score_in_groups_still_reads_the_prompt_once(engine, monkeypatch):
    """Many or long candidates are judged in groups (SCORE_CELLS bounds the context); the root holding the
    prompt stays, so the count and the scores do not change."""
    sj = judge(engine)
    whole = sj.score(PROBLEM, SOLUTIONS)
    monkeypatch.setattr(selfjudge_module, "SCORE_CELLS", 1)  # one candidate at a time
    before = sj.usage.snapshot()
    grouped = sj.score(PROBLEM, SOLUTIONS)
    assert (sj.usage - before).prompt_tokens == expected_tokens(sj, PROBLEM, SOLUTIONS)
    for a, b in zip(whole, grouped):
        assert a == pytest.approx(b, abs=1e-5)


def test_search_branches_feed_only_the_new_step(engine):
    """A search tree scripted by hand: forks share what their parent read; each new step is fed once on its
    branch and the question once on a fork; the scores equal a fresh judging of each branch's text."""
    sj = judge(engine)
    before = sj.usage.snapshot()
    sc = sj.scorer(PROBLEM, max_live=3, max_tokens=64)
    a, b = sc.fork(0, 2)
    sc.drop([0])
    texts = {a: ["12+7=19\n"], b: ["12 + 7 \n"]}
    got = {x: [s] for x, s in zip((a, b), sc.add_steps([a, b], [texts[a][0], texts[b][0]]))}
    (c,) = sc.fork(a, 1)
    texts[c], got[c] = list(texts[a]), list(got[a])
    sc.drop([b])
    for step_a, step_c in (("19=19\n", "\\boxed{19}"), ("  ", "\n")):
        sa, scc = sc.add_steps([a, c], [step_a, step_c])
        texts[a].append(step_a), texts[c].append(step_c)
        got[a].append(sa), got[c].append(scc)
    sc.close()
    for x in (a, c):
        assert got[x] == pytest.approx(fresh(sj, PROBLEM, texts[x]), abs=1e-5)
    # what was read: the prompt, b's and a's first steps, then a's and c's own steps; the question 6 times
    q = len(sj.question_ids)
    read = sum(len(p) for p in sj.pieces(texts[a])) + sum(len(p) for p in sj.pieces(texts[b]))
    read += sum(len(p) for p in sj.pieces(texts[c])[1:])
    prompt = len(engine.tokenize(sj.prompt_for(PROBLEM)))
    assert (sj.usage - before).prompt_tokens == prompt + read + 6 * q


class CountingJudge(SelfJudgePRM):
    """SelfJudgePRM that also tallies what it was asked to judge (the engine does the real work)."""

    steps_scored = 0
    tokens_read = 0

    def judge(self, bs, branches, pieces, room):
        self.steps_scored += len(branches)
        self.tokens_read += sum(len(p) for p in pieces)
        return super().judge(bs, branches, pieces, room)


def ctx(engine, prm, budget, **options) -> SolveContext:
    return SolveContext(
        problem=PROBLEM,
        preset=PRESET,
        policy=engine,
        budget=budget,
        seed=1,
        sampling=SamplingParams(temperature=1.0, max_tokens=24, seed=1),
        prm=prm,
        options=options,
    )


@pytest.mark.parametrize("name", ["beam", "dvts", "lookahead", "particle-filter"])
def test_search_pays_each_generated_token_once_and_the_question_per_step(engine, name):
    sj = CountingJudge(engine, lambda p: problem_prompt(PRESET, engine, p))
    r = REGISTRY[name].run(ctx(engine, sj, 8, width=4))
    q, prompt = len(sj.question_ids), len(engine.tokenize(sj.prompt_for(PROBLEM)))
    assert r.spent.prm_tokens == prompt + sj.tokens_read + q * sj.steps_scored
    # byte vocabulary: a step's text is at most 3 bytes per token generated for it (a byte that is not valid
    # UTF-8 comes back as U+FFFD); reading the text so far at every step, as before, was well above that
    assert sj.tokens_read <= 3 * r.spent.tokens_generated
    assert sj.steps_scored >= sum(len(c.steps) for c in r.candidates)
    for c in r.candidates:  # the final beams' scores are those of judging their text afresh (float32 rounding
        # differs with the batch a token is decoded in: up to 3e-5 here)
        assert c.scores == pytest.approx(fresh(sj, PROBLEM, c.steps), abs=1e-4)


def test_weighted_best_of_n_reads_each_candidate_once(engine):
    sj = judge(engine)
    r = REGISTRY["weighted-best-of-n"].run(ctx(engine, sj, 8))
    assert r.spent.prm_tokens == expected_tokens(sj, PROBLEM, [c.steps for c in r.candidates])
    for c in r.candidates:
        assert c.scores == pytest.approx(fresh(sj, PROBLEM, c.steps), abs=1e-4)
