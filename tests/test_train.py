"""The training recipe: a few real training steps, then a GGUF that llama.cpp loads with the same logits."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
llama_cpp = pytest.importorskip("llama_cpp")

from ttc.builtin.arith import generate_problems, solution_steps  # noqa: E402
from ttc.builtin.gguf_llama import LlamaShape  # noqa: E402
from ttc.builtin.train.common import make_optimizer, seed_everything, train_step  # noqa: E402
from ttc.builtin.train.data import IGNORE, collate, policy_example, prm_example, revision_example, tag_digit_targets  # noqa: E402
from ttc.builtin.train.export import export_gguf, load_gguf_model  # noqa: E402
from ttc.builtin.train.formats import BAD_ID, GOOD_ID, TAG_ID, VOCAB, prm_text  # noqa: E402
from ttc.builtin.train.model import Llama  # noqa: E402
from ttc.builtin.train.prm import auroc  # noqa: E402
from ttc.builtin.train.sample import generate  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "ttc" / "models"
TINY = LlamaShape(n_vocab=VOCAB.size, n_embd=64, n_layer=2, n_head=2, n_head_kv=2, n_ff=128, n_ctx=512)


def _train_tiny(steps: int = 5, seed: int = 0) -> tuple[Llama, list[float]]:
    torch.set_num_threads(2)
    seed_everything(seed)
    model = Llama(TINY)
    opt = make_optimizer(model, 3e-3, 0.1)
    problems = generate_problems(steps * 8, seed=seed)
    losses = []
    for s in range(steps):
        ids, targets = collate([policy_example(p) for p in problems[s * 8 : (s + 1) * 8]])
        losses.append(train_step(model, model, opt, ids, targets, 3e-3))
    return model, losses


def _llama_logits(path, ids: list[int]) -> np.ndarray:
    llm = llama_cpp.Llama(str(path), n_ctx=512, logits_all=True, n_threads=2, verbose=False)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


def _assert_same_weights(a, b) -> None:
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_few_training_steps_lower_the_loss_and_same_seed_gives_same_weights():
    a, losses = _train_tiny(6, seed=1)
    b, _ = _train_tiny(6, seed=1)
    assert losses[-1] < losses[0]
    _assert_same_weights(a, b)


@pytest.mark.parametrize("dtype,tol", [("f32", 2e-3), ("f16", 5e-2)])
def test_exported_gguf_loads_in_llama_cpp_with_the_torch_logits(tmp_path, dtype, tol):
    model, _ = _train_tiny(4)
    path = export_gguf(model, tmp_path / "tiny.gguf", "tiny", dtype)
    text = prm_text("37+48-19", ["37+48=85", "85-19=66", "\\boxed{66}"])
    ids = VOCAB.encode(text, add_bos=True)
    llm = llama_cpp.Llama(str(path), n_ctx=512, n_threads=2, verbose=False)
    assert llm.tokenize(text.encode(), add_bos=True, special=False) == ids
    assert llm.n_vocab() == VOCAB.size
    del llm
    with torch.no_grad():
        want = model(torch.tensor([ids]))[0].numpy()
    got = _llama_logits(path, ids)
    assert np.abs(got - want).max() < tol * max(1.0, np.abs(want).max())


def test_gguf_read_back_into_torch_is_the_same_model(tmp_path):
    model, _ = _train_tiny(2)
    path = export_gguf(model, tmp_path / "tiny.gguf", "tiny", "f32")
    again = load_gguf_model(path)
    ids = torch.tensor([VOCAB.encode("Problem: 1+2\nSolution:\n", add_bos=True)])
    with torch.no_grad():
        assert torch.allclose(model(ids), again(ids), atol=1e-6)


def test_cached_generation_equals_full_recompute():
    """Greedy tokens from the KV-cached, left-padded batch equal argmax of full forward passes."""
    model, _ = _train_tiny(3)
    prompts = [VOCAB.encode(f"Problem: {p}\nSolution:\n", add_bos=True) for p in ["1+2", "37+48-19+5"]]
    got = generate(model, prompts, 12, temperature=0.0, stop_id=-1, batch_size=2)
    for prompt, out in zip(prompts, got):
        seq = list(prompt)
        with torch.no_grad():
            for _ in range(12):
                seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        assert out == seq[len(prompt) :]


def test_policy_example_learns_only_the_solution():
    ids, targets = policy_example("37+48-19", attempts=["37+48=84\n84-19=65\n\\boxed{65}"])
    learned = [t for t in targets if t != IGNORE]
    assert VOCAB.decode(learned[:-1]) == "\n".join(solution_steps("37+48-19"))
    assert learned[-1] == VOCAB.eos_id
    assert "Attempt 1:\n37+48=84" in VOCAB.decode(ids)


def test_revision_example_weighs_the_line_where_the_attempt_went_wrong():
    attempt = "37+48=85\n85-19=76\n76+5=81\n\\boxed{81}"  # wrong from its second line on
    ids, targets, weights, negatives = revision_example("37+48-19+5", [attempt], deviation_weight=3.0)
    heavy = [t for t, w in zip(targets, weights) if w > 1]
    assert VOCAB.decode(heavy) == "85-19=66\n"
    assert all(w == 1.0 for t, w in zip(targets, weights) if t == IGNORE)
    # the one negative target: where the right line says "6", the attempt said "7"
    marked = [(i, n) for i, n in enumerate(negatives) if n != IGNORE]
    assert len(marked) == 1
    i, neg = marked[0]
    assert (chr(targets[i]), chr(neg)) == ("6", "7") and VOCAB.decode(ids[: i + 1]).endswith("85-19=")
    ids2, targets2 = policy_example("37+48-19+5", attempts=[attempt])
    assert (ids2, targets2) == (ids, targets)


def test_revision_negatives_name_each_attempts_first_wrong_character():
    attempts = ["37+48=85\n85-17=68\n68+5=73\n\\boxed{73}", "37+48=84\n84-19=65\n65+5=70\n\\boxed{70}",
                "37+48=85\n85-19=66\n66+5=71"]  # fmt: skip
    ids, targets, _, negatives = revision_example("37+48-19+5", attempts)
    got = [(VOCAB.decode(ids[: i + 1]), chr(targets[i]), chr(n)) for i, n in enumerate(negatives) if n >= 0]
    # the wrong operand 17 (for 19), the wrong digit 4 (for 5); the third attempt only lacks its answer line
    assert [(t, n) for _, t, n in got] == [("5", "4"), ("9", "7")]
    assert got[0][0].endswith("Solution:\n37+48=8") and got[1][0].endswith("Solution:\n37+48=85\n85-1")


def test_unlikelihood_lowers_the_probability_of_the_negative_token():
    seed_everything(0)
    model = Llama(TINY)
    opt = make_optimizer(model, 3e-3, 0.0)
    ex = revision_example("37+48-19+5", ["37+48=85\n85-19=76\n76+5=81\n\\boxed{81}"])
    ids, targets, weights, negatives = collate([ex])
    pos = (negatives[0] >= 0).nonzero().item()

    def p_neg():
        with torch.no_grad():
            return model(ids)[0, pos].softmax(-1)[negatives[0, pos]].item()

    before = p_neg()
    for _ in range(5):
        train_step(model, model, opt, ids, torch.full_like(targets, IGNORE), 3e-3, None, negatives, 1.0)
    assert p_neg() < before / 2


def test_prm_example_labels_sit_on_the_tags():
    steps = ["37+48=84", "84-19=65", "\\boxed{65}"]
    ids, targets = prm_example("37+48-19", steps)
    at_tags = [t for i, t in zip(ids, targets) if i == TAG_ID]
    assert at_tags == [BAD_ID] * 3 and sum(t != IGNORE for t in targets) == 3
    ids, targets = prm_example("37+48-19", ["37+48=85", "85-19=66", "\\boxed{66}"], learn_steps=True)
    assert [t for i, t in zip(ids, targets) if i == TAG_ID] == [GOOD_ID] * 3


def test_prm_result_digits_are_learned_up_to_the_first_wrong_digit():
    ids, targets = prm_example("37+48-19", ["37+48=84", "84-19=75", "\\boxed{75}"], learn_results=True)
    pairs = [(VOCAB.decode([i]), VOCAB.decode([t])) for i, t in zip(ids, targets) if t != IGNORE]
    # 37+48 is 85: "8" right, then "5" where "4" was written; 84-19 is 65: "6" where "7" was written
    assert pairs == [("=", "8"), ("8", "5"), ("ки", "-"), ("=", "6"), ("ки", "-"), ("ки", "-")]


def test_auroc_matches_pairwise_definition():
    rng = random.Random(0)
    s = [rng.choice([0.1, 0.5, 0.9, rng.random()]) for _ in range(60)]
    y = [rng.random() < 0.6 for _ in range(60)]
    pos = [a for a, b in zip(s, y) if b]
    neg = [a for a, b in zip(s, y) if not b]
    want = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert abs(auroc(s, y) - want) < 1e-12


def test_tag_digits_name_the_value_each_step_should_show_and_are_learned_at_the_tags():
    from ttc.builtin.train.prm import with_extra_targets

    steps = ["37+48=84", "84-19=65", "\\boxed{66}"]
    # 37+48 is 85; 84-19 is 65 (right, given its own left side); the answer line should repeat 65
    assert [[chr(t) for t in d] for d in tag_digit_targets("37+48-19", steps)] == [["8", "5"], ["6", "5"], ["6", "5"]]
    ids, targets, extra = with_extra_targets(collate([prm_example("37+48-19", steps)]), [("37+48-19", steps)])
    tags = (ids[0] == TAG_ID).nonzero().squeeze(1).tolist()
    assert [[chr(t) for t in extra[0, p, :2].tolist()] for p in tags] == [["8", "5"], ["6", "5"], ["6", "5"]]
    assert int((extra != IGNORE).sum()) == 6
    seed_everything(0)
    model = Llama(TINY)
    opt = make_optimizer(model, 3e-3, 0.0)

    def p_digit():
        with torch.no_grad():
            return model(ids)[0, tags[0]].softmax(-1)[extra[0, tags[0], 0]].item()

    before = p_digit()
    for _ in range(5):
        train_step(model, model, opt, ids, targets, 3e-3, extra=extra, extra_weights=(1.0, 1.0))
    assert p_digit() > 2 * before


def test_digit_flags_mark_where_a_written_result_leaves_the_true_one():
    from ttc.builtin.train.data import digit_flags

    steps = ["37+48=84", "84-19=65", "65+1=6", "\\boxed{6}"]  # 85 written 84; 65 right; 66 cut short to 6
    ids, _ = prm_example("37+48-19+1", steps)
    got = [(VOCAB.decode([ids[p]]), t) for p, t in digit_flags("37+48-19+1", steps)]
    assert got == [("8", GOOD_ID), ("4", BAD_ID), ("6", GOOD_ID), ("5", GOOD_ID), ("6", BAD_ID)]


def test_check_drills_are_first_steps_right_or_off_by_ten_or_one():
    from ttc.builtin.arith import check_steps, evaluate
    from ttc.builtin.train.prm import _drill_probes, drill_problem, drill_steps

    rng = random.Random(0)
    skip = {"10+10+1", *generate_problems(50, ops=2, seed=3)}
    problems = [drill_problem(rng, skip) for _ in range(600)]
    assert not skip & set(problems) and len(set(problems)) > 590
    probed = _drill_probes()[3]
    assert len(probed) > 190 and not probed & {re.match(r"\d+[+-]\d+", p)[0] for p in problems}
    drills = [(p, drill_steps(p, rng)) for p in problems]
    right = [check_steps(p, s, cumulative=True)[0] for p, s in drills]
    assert 0.28 < sum(right) / len(right) < 0.39
    offs = set()
    for p, (step,) in drills:
        lhs, shown = step.split("=")
        a, b = (int(x) for x in re.split("[+-]", lhs))
        assert p.startswith(lhs) and 10 <= a <= 99 and 10 <= b <= 99
        offs.add(abs(int(shown) - evaluate(lhs)))
    assert offs == {0, 1, 10}


def test_drill_batches_flag_the_wrong_digit_and_teach_the_tag():
    from ttc.builtin.train.prm import drill_batch

    ids, targets, extra = drill_batch(32, random.Random(1), set())
    assert ids.shape[0] == 32 and extra.shape == (*ids.shape, 3)
    assert (extra[:, :, :2] == IGNORE).all()  # no tag digits in the drill
    flags = extra[:, :, 2]
    tags = targets[ids == TAG_ID]
    assert set(tags.tolist()) == {GOOD_ID, BAD_ID}
    for row in range(32):  # a right step's digits are all GOOD; a wrong one's turn BAD and stay BAD
        bad_tag = (targets[row][ids[row] == TAG_ID] == BAD_ID).any().item()
        seq = [t for t in flags[row].tolist() if t != IGNORE]
        first_bad = seq.index(BAD_ID) if BAD_ID in seq else len(seq)
        assert seq and seq[first_bad:] == [BAD_ID] * (len(seq) - first_bad)
        assert (first_bad < len(seq)) == bad_tag


def test_prm_training_runs_its_drill_then_stops_the_mixture_where_told(tmp_path):
    from ttc.builtin.train.prm import PRMConfig, train_prm

    torch.set_num_threads(2)
    policy = load_gguf_model(MODELS / "tiny-arith-policy.gguf")  # ends its solutions, so sampling is quick
    cfg = PRMConfig(
        init="scratch", extra_layers=0, steps=6, stop_after=2, batch=4, sample_problems=2, samples_per_problem=1,
        check_drill=3, digit_flags=True, val_per_ops=1, eval_every=1, compile=False,
    )  # fmt: skip
    rep = train_prm(cfg, policy, None, tmp_path, log=lambda _: None)
    assert [(h["phase"], h["step"]) for h in rep["history"]] == [("drill", 3), ("step", 1), ("step", 2)]
    assert rep["drill"]["steps"] == 3 and set(rep["drill"]) == {"steps", "off10", "off1"}
    assert all((tmp_path / f"prm-{p}{s}.pt").is_file() for p, s in [("drill", 3), ("step", 1), ("step", 2)])
    assert rep["selected"] in rep["history"] and (tmp_path / "prm-train.json").is_file()


def _resume_config(**kw):
    from ttc.builtin.train.policy import PolicyConfig

    small = dict(
        n_embd=32, n_layer=1, n_head=2, n_ff=64, n_ctx=512, steps=7, batch=8, warmup=2, revision_start=2,
        revision_refresh=2, revision_problems=12, revision_batch=4, eval_start=4, eval_every=2, val_per_ops=1,
        val_samples=2, reselect_top=1, checkpoint_every=2, compile=False, lr=3e-3,
    )  # fmt: skip
    return PolicyConfig(**{"seed": 3, **small, **kw})


def test_policy_training_killed_and_resumed_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    from ttc.builtin.train.common import load_checkpoint
    from ttc.builtin.train.policy import RESUME_FILE, train_policy

    torch.set_num_threads(1)
    cfg = _resume_config()
    whole = train_policy(cfg, tmp_path / "whole", log=lambda m: None)
    assert train_policy(cfg, tmp_path / "cut", log=lambda m: None, stop_after=5) is None  # killed after step 5
    state = torch.load(tmp_path / "cut" / RESUME_FILE, weights_only=False)
    assert state["step"] == 4 and list(state["pools"]) == [2]  # steps 4-5 run again; pool 2 is replayed
    said = []
    resumed = train_policy(cfg, tmp_path / "cut", log=said.append)
    assert any("resuming at step 4" in m for m in said)
    assert resumed["tokens"] == whole["tokens"]
    assert [h["greedy"] for h in resumed["history"]] == [h["greedy"] for h in whole["history"]]
    whole_model, cut_model = (load_checkpoint(tmp_path / d / "policy-last.pt")[0] for d in ("whole", "cut"))
    _assert_same_weights(whole_model, cut_model)
    with pytest.raises(SystemExit, match="another config .*lr"):  # a resume with other flags is refused
        train_policy(_resume_config(lr=1e-3), tmp_path / "cut", log=lambda m: None)


def test_a_warm_started_stage_begins_from_the_checkpoint_and_refuses_another_shape(tmp_path):
    from ttc.builtin.train.common import load_checkpoint
    from ttc.builtin.train.policy import train_policy

    torch.set_num_threads(1)
    train_policy(_resume_config(steps=3, eval_start=2), tmp_path / "one", log=lambda m: None)
    first = tmp_path / "one" / "policy-last.pt"
    said = []  # lr 0: a stage that trains nothing must end with exactly the weights it started from
    train_policy(
        _resume_config(seed=4, init=str(first), lr=0.0, steps=3, eval_start=2), tmp_path / "two", log=said.append
    )
    assert any("warm start from" in m for m in said)
    a, _ = load_checkpoint(first)
    _assert_same_weights(a, load_checkpoint(tmp_path / "two" / "policy-last.pt")[0])
    # an exported policy (a shipped GGUF) warm-starts a stage the same way; f32 export: the same weights
    from ttc.builtin.train.export import export_gguf

    exported = export_gguf(a, tmp_path / "one.gguf", "one")
    train_policy(
        _resume_config(seed=5, init=str(exported), lr=0.0, steps=3, eval_start=2), tmp_path / "four", log=said.append
    )
    _assert_same_weights(a, load_checkpoint(tmp_path / "four" / "policy-last.pt")[0])
    with pytest.raises(SystemExit, match="another shape"):
        train_policy(_resume_config(init=str(first), n_embd=64), tmp_path / "three", log=lambda m: None)
    with pytest.raises(SystemExit, match="another shape"):
        train_policy(_resume_config(init=str(exported), n_embd=64), tmp_path / "five", log=lambda m: None)
