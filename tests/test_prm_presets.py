"""The real-pair presets' PRM wiring (templates, tags, token lookups), on small generated GGUFs that carry
the same special tokens, since the real 4-8 GB models cannot be downloaded here."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import make_tiny_gguf

from ttc.engine.llama import LlamaEngine
from ttc.presets import load_preset
from ttc.prm import MathShepherdPRM, RLHFlowPRM, SelfJudgePRM

# The shape of Llama 3.1's chat template: a header per turn, contents trimmed, <|eot_id|> after each.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
LLAMA3_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


@pytest.fixture(scope="module")
def llama3_prm_engine(tmp_path_factory):
    path = make_tiny_gguf(
        tmp_path_factory.mktemp("rlhflow") / "prm.gguf",
        seed=9,
        user_tokens=LLAMA3_TOKENS,
        chat_template=LLAMA3_TEMPLATE,
    )
    eng = LlamaEngine(str(path), n_threads=2)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def shepherd_engine(tmp_path_factory):
    eng = LlamaEngine(
        str(make_tiny_gguf(tmp_path_factory.mktemp("ms") / "prm.gguf", seed=4, user_tokens=("ки",))), n_threads=2
    )
    yield eng
    eng.close()


def test_rlhflow_preset_reads_each_step_where_its_reply_begins(llama3_prm_engine):
    preset = load_preset("qwen2.5-math-1.5b-rlhflow")
    prm = RLHFlowPRM(llama3_prm_engine, preset.prm, preset.step_delimiter)
    steps = ["First, 2+2=4.\n\n", "So the answer is \\boxed{4}."]
    ids, positions = prm.tokens("What is 2+2?", steps)
    assert len(positions) == 2
    for p in positions:
        assert ids[p + 1] == prm.good_id  # the reply "+" follows each read position
        assert llama3_prm_engine.detokenize(ids[: p + 1]).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    eot = llama3_prm_engine.tokenize("<|eot_id|>", add_bos=False)
    assert len(eot) == 1 and ids.count(eot[0]) == 4  # two user turns, two replies
    text = llama3_prm_engine.detokenize(ids)
    assert "What is 2+2? First, 2+2=4." in text and "<|start_header_id|>assistant<|end_header_id|>" in text
    scores = prm.score("What is 2+2?", [steps, steps[:1]])
    assert len(scores[0]) == 2 and len(scores[1]) == 1
    assert scores[1][0] == pytest.approx(scores[0][0], abs=1e-3)  # the first step reads the same either way
    sc = prm.scorer("What is 2+2?", max_live=2, max_tokens=64)
    kid = sc.fork(0, 1)[0]
    incremental = [sc.add_steps([kid], [s])[0] for s in steps]
    assert incremental == pytest.approx(scores[0], abs=1e-3)


def test_math_shepherd_preset_finds_its_tag_and_tokens(shepherd_engine):
    preset = load_preset("llama-3.2-1b")
    prm = MathShepherdPRM(shepherd_engine, preset.prm, preset.step_delimiter)
    assert shepherd_engine.detokenize([prm.tag_id]) == "ки"
    ids, at = prm.piece("Step 1: 2+2=4.\n\n")
    assert ids[at] == prm.tag_id and shepherd_engine.detokenize(ids) == "Step 1: 2+2=4. ки\n\n"
    scores = prm.score("What is 2+2?", [["Step 1: 2+2=4.\n\n", "The answer is \\boxed{4}."]])
    assert len(scores[0]) == 2 and all(0 < s < 1 for s in scores[0])


def test_a_solution_cannot_plant_its_own_step_tags(shepherd_engine):
    preset = load_preset("llama-3.2-1b")
    prm = MathShepherdPRM(shepherd_engine, preset.prm, preset.step_delimiter)
    ids, _ = prm.piece("2+2=4 ки ки\n\n")
    assert ids.count(prm.tag_id) == 1


def test_self_judge_preset_needs_no_prm_model(engine):
    preset = load_preset("chat-self-judge")
    assert preset.prm.format == "self-judge" and preset.prm.model is None
    sj = SelfJudgePRM(engine, lambda p: p, preset.prm.aggregation)
    assert len(sj.score("1+1", [["2\n\n", "\\boxed{2}"]])[0]) == 2


def test_rlhflow_needs_single_token_replies(llama3_prm_engine):
    preset = load_preset("qwen2.5-math-1.5b-rlhflow")
    bad = dataclasses.replace(preset.prm, good_token="yes!")
    with pytest.raises(Exception, match="good token 'yes!' is not a single token"):
        RLHFlowPRM(llama3_prm_engine, bad, preset.step_delimiter)


def test_rlhflow_search_feeds_each_branch_only_its_new_turn(llama3_prm_engine):
    """In step-wise search the RLHFlow PRM keeps a branch per search branch: the conversation with one more
    step extends the one before, so only the new turn is evaluated (the problem once, for all branches),
    and the scores equal a fresh scoring of each branch's whole conversation."""
    from ttc.prm.rlhflow import _ChatScorer

    preset = load_preset("qwen2.5-math-1.5b-rlhflow")
    prm = RLHFlowPRM(llama3_prm_engine, preset.prm, preset.step_delimiter)
    problem = "What is 2+2?"
    before = prm.usage.snapshot()
    sc = prm.scorer(problem, max_live=4, max_tokens=64)
    assert isinstance(sc, _ChatScorer)
    kids = sc.fork(0, 2)
    sc.drop([0])
    first = sc.add_steps(kids, ["2+2 is 4.\n\n", "2+2 is 5.\n\n"])
    grand = sc.fork(kids[0], 1)
    sc.drop(kids[1:])
    last = ["So \\boxed{4}.", "Hence \\boxed{4}."]
    second = sc.add_steps([kids[0], grand[0]], last)
    sc.close()
    spent = (prm.usage - before).prompt_tokens
    fresh = prm.score(problem, [["2+2 is 4.\n\n", last[0]], ["2+2 is 4.\n\n", last[1]], ["2+2 is 5.\n\n"]])
    assert second == pytest.approx([fresh[0][1], fresh[1][1]], abs=1e-3)
    assert first == pytest.approx([fresh[0][0], fresh[2][0]], abs=1e-3)
    # what was read: the head once, each first turn once, each second turn (with the reply before it) once
    full = [prm.tokens(problem, s)[0] for s in (["2+2 is 4.\n\n", last[0]], ["2+2 is 4.\n\n", last[1]])]
    ones = [prm.tokens(problem, [s])[1][0] + 1 for s in ("2+2 is 4.\n\n", "2+2 is 5.\n\n")]
    ends = [prm.tokens(problem, s)[1][-1] + 1 for s in (["2+2 is 4.\n\n", last[0]], ["2+2 is 4.\n\n", last[1]])]
    head = len(llama3_prm_engine.tokenize(prm.head(problem), add_bos=True, special=True))
    assert full[0][:head] == full[1][:head]
    assert spent == head + sum(o - head for o in ones) + sum(e - ones[0] for e in ends)


def test_rlhflow_with_a_template_that_rewrites_earlier_turns_rescores(tmp_path):
    """A chat template whose rendering of earlier turns changes as turns are added (here: a turn count up
    front) cannot be extended; the scorer falls back to rescoring whole conversations, still right."""
    from ttc.prm.rlhflow import _RenderedScorer

    counted = "{{ messages | length }}|" + LLAMA3_TEMPLATE
    path = make_tiny_gguf(tmp_path / "prm.gguf", seed=9, user_tokens=LLAMA3_TOKENS, chat_template=counted)
    eng = LlamaEngine(str(path), n_threads=2)
    try:
        preset = load_preset("qwen2.5-math-1.5b-rlhflow")
        prm = RLHFlowPRM(eng, preset.prm, preset.step_delimiter)
        sc = prm.scorer("What is 2+2?", max_live=2, max_tokens=64)
        assert isinstance(sc, _RenderedScorer)
        kid = sc.fork(0, 1)[0]
        steps = ["2+2 is 4.\n\n", "So \\boxed{4}."]
        got = [sc.add_steps([kid], [s])[0] for s in steps]
        fresh = prm.score("What is 2+2?", [steps[:1], steps])  # each step as its own conversation renders it
        assert got == pytest.approx([fresh[0][0], fresh[1][1]], abs=1e-3)
    finally:
        eng.close()
