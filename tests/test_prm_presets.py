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
    preset = load_preset("qwen2.5-math-1.5b")
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
    preset = load_preset("qwen2.5-math-1.5b")
    bad = dataclasses.replace(preset.prm, good_token="yes!")
    with pytest.raises(Exception, match="good token 'yes!' is not a single token"):
        RLHFlowPRM(llama3_prm_engine, bad, preset.step_delimiter)
