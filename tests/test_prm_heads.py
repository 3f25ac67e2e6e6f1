"""Head PRMs (value-head, classifier-head) on tiny random Hugging Face checkpoints, against transformers.

The checkpoints (tests/hf_checkpoints.py) are laid out as Skywork-o1-Open-PRM's and Qwen2.5-Math-PRM's are;
`ttc prm import` turns them into a GGUF plus head; llama.cpp's hidden states through the head must give the
scores that transformers' `last_hidden_state` through the same head gives, on the token ids the reference
input builders (Skywork's per-step encoding, Qwen's chat template) produce.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO, ttc_env
from hf_checkpoints import QWEN_PRM_SYSTEM, TEXTS, hf_ids, make_checkpoint, reference_scores

from ttc.cli import main
from ttc.engine.base import SamplingParams
from ttc.engine.llama import LlamaEngine
from ttc.presets import PRMConfig, load_preset
from ttc.prm.heads import HeadPRM
from ttc.strategies import REGISTRY, SolveContext

pytest.importorskip("transformers")

PROBLEMS = ["What is 2+2?", "Natalia sold 48 clips in April and half as many in May. How many in all?"]
SOLUTIONS = [
    [["First, 2 + 2 = 4.\n\n", "So the answer is \\boxed{4}."], ["It is 5.\n\n"], ["2+2 is\nfour\n\n", "\\boxed{4}"]],
    [["In May she sold 48/2 = 24 clips.\n\n", "In all, 48+24 = 72.\n\n", "The answer is \\boxed{72}."]],
]
# Largest |ttc - transformers| allowed per backbone type. f32: 1e-4 (measured: 8e-7). f16 and q8_0: twice the
# largest difference measured on these checkpoints (1.6e-3 and 3.1e-2, both the value head's; see the README).
BOUNDS = {"f32": 1e-4, "f16": 3e-3, "q8_0": 6e-2}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {kind: make_checkpoint(root / kind, kind, seed=3) for kind in ("value", "classifier")}


@pytest.fixture(scope="module")
def imported(checkpoints, tmp_path_factory):
    """(kind, type) -> the prm: section `ttc prm import` wrote."""
    out = {}
    for kind, folder in checkpoints.items():
        for qtype in ("f32", "f16", "q8_0"):
            dest = tmp_path_factory.mktemp(f"{kind}-{qtype}")
            assert main(["prm", "import", str(folder), "--out", str(dest), "--type", qtype]) == 0
            out[kind, qtype] = yaml.safe_load((dest / "prm.yaml").read_text())["prm"]
    return out


def head_prm(section: dict, delimiter: str = "\n\n") -> HeadPRM:
    engine = LlamaEngine(section["model"], n_threads=2)
    return HeadPRM(engine, PRMConfig(**section), delimiter)


def reference_input(kind: str, folder, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
    """Token ids and step positions as the reference implementations build them."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    texts = [s.strip("\n").rstrip() for s in steps]
    if kind == "value":
        return skywork_input(tok, problem, texts)
    messages = [
        {"role": "system", "content": QWEN_PRM_SYSTEM},
        {"role": "user", "content": problem},
        {"role": "assistant", "content": "<extra_0>".join(texts) + "<extra_0>"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    ids = tok.encode(text, add_special_tokens=False)
    tag = tok.convert_tokens_to_ids("<extra_0>")
    return ids, [i for i, t in enumerate(ids) if t == tag]


def skywork_input(tok, problem: str, texts: list[str]) -> tuple[list[int], list[int]]:
    """Skywork's prepare_input (skywork-o1-prm-inference, model_utils/io_utils.py) on the response made of the
    steps one per line: BOS + problem + "\\n" encoded, then the response split on the step token "\\n", each
    piece encoded alone (an empty one as nothing) and followed by the step token, whose positions are flagged.
    A step with newlines inside is several pieces; its score is the flag at its last piece."""
    ids = tok.encode(tok.bos_token + problem + "\n", add_special_tokens=False)
    step_id = tok.encode("\n", add_special_tokens=False)[-1]
    flags = []
    for piece in "\n".join(texts).split("\n"):
        ids += (tok.encode(piece, add_special_tokens=False) if piece else []) + [step_id]
        flags.append(len(ids) - 1)
    ends = np.cumsum([len(t.split("\n")) for t in texts]) - 1
    return ids, [flags[i] for i in ends]


@pytest.mark.parametrize("kind", ["value", "classifier"])
def test_gguf_tokenizes_as_the_hf_tokenizer(kind, checkpoints, imported):
    eng = LlamaEngine(imported[kind, "f32"]["model"], n_threads=2)
    try:
        for text in TEXTS:
            assert eng.tokenize(text, add_bos=False, special=True) == hf_ids(checkpoints[kind], text), text
    finally:
        eng.close()


@pytest.mark.parametrize("kind", ["value", "classifier"])
def test_prm_input_is_the_reference_input(kind, checkpoints, imported):
    prm = head_prm(imported[kind, "f32"])
    try:
        for problem, solutions in zip(PROBLEMS, SOLUTIONS):
            prefix = prm.engine.tokenize(prm.prefix(problem))
            for steps in solutions:
                ids, pos = prm.tokens(steps)
                ref_ids, ref_pos = reference_input(kind, checkpoints[kind], problem, steps)
                assert prefix + ids == ref_ids[: len(prefix) + len(ids)]
                assert [len(prefix) + p for p in pos] == ref_pos
    finally:
        prm.engine.close()


@pytest.mark.parametrize("qtype", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("kind", ["value", "classifier"])
def test_scores_equal_transformers(kind, qtype, checkpoints, imported):
    prm = head_prm(imported[kind, qtype])
    worst = 0.0
    try:
        for problem, solutions in zip(PROBLEMS, SOLUTIONS):
            got = prm.score(problem, solutions)
            for steps, g in zip(solutions, got):
                ids, pos = reference_input(kind, checkpoints[kind], problem, steps)
                ref = reference_scores(checkpoints[kind], ids, pos)
                assert len(g) == len(ref) == len(steps)
                worst = max(worst, float(np.max(np.abs(np.array(g) - np.array(ref)))))
    finally:
        prm.engine.close()
    print(f"\nmax |ttc - transformers| {kind} {qtype}: {worst:.2e}")
    assert worst <= BOUNDS[qtype]


@pytest.mark.parametrize("qtype", ["f32", "f16"])
@pytest.mark.parametrize("kind", ["value", "classifier"])
def test_the_fixed_prefix_is_read_once_per_engine_and_changes_no_score(kind, qtype, imported):
    """The template's text before the problem (the classifier's system prompt) stays cached from one
    problem to the next: later problems read fewer PRM tokens, and every score equals a fresh engine's."""
    section = imported[kind, qtype]
    order = [0, 1, 0, 1]
    warm = head_prm(section)
    try:
        kept = len(warm.engine.tokenize(warm.fixed_prefix())) if warm.fixed_prefix() else 0
        got, cost = [], []
        for i in order:
            before = warm.engine.usage.prompt_tokens
            got.append(warm.score(PROBLEMS[i], SOLUTIONS[i]))
            cost.append(warm.engine.usage.prompt_tokens - before)
    finally:
        warm.engine.close()
    for n, (i, g, c) in enumerate(zip(order, got, cost)):
        fresh = head_prm(section)
        try:
            assert g == fresh.score(PROBLEMS[i], SOLUTIONS[i])  # the same floats, not merely close
            first = fresh.engine.usage.prompt_tokens
        finally:
            fresh.engine.close()
        assert c == (first if n == 0 else first - kept)
    assert kind == "value" or kept > 20  # the classifier's system prompt is the bulk of its prefix


def test_scores_are_not_flat(checkpoints, imported):
    """The random heads spread their scores, so the agreement above is not that of two constants."""
    for kind in ("value", "classifier"):
        prm = head_prm(imported[kind, "f32"])
        try:
            flat = [s for sol in prm.score(PROBLEMS[0], SOLUTIONS[0]) for s in sol]
        finally:
            prm.engine.close()
        assert max(flat) - min(flat) > 0.02, (kind, flat)


@pytest.mark.parametrize("kind", ["value", "classifier"])
def test_beam_search_scores_incrementally_as_afresh(kind, imported):
    """Beam search with the built-in policy and a head PRM on 8 held-out problems: each final beam's step
    scores (read on its PRM branch, only new tokens evaluated) equal a fresh scoring of its steps; PRM
    tokens stay near the policy's (the template's fixed part is read for the first problem only)."""
    preset = load_preset("tiny-arith")
    section = imported[kind, "f32"]
    prm = head_prm(section, preset.step_delimiter)
    policy = LlamaEngine(str(REPO / "ttc" / "models" / "tiny-arith-policy.gguf"), n_threads=2)
    preset = dataclasses.replace(preset, prm=prm.cfg)
    lines = (REPO / "ttc" / "data" / "arith500.jsonl").read_text().splitlines()[:8]
    problems = [json.loads(line)["problem"] for line in lines]
    try:
        for budget in (4, 16):
            runs = []
            for problem in problems:
                c = SolveContext(
                    problem=problem, preset=preset, policy=policy, budget=budget, seed=2,
                    sampling=SamplingParams(temperature=0.8, max_tokens=192, seed=2), prm=prm, options={"width": 4},
                )  # fmt: skip
                runs.append(REGISTRY["beam"].run(c))
            prm_tokens = sum(r.spent.prm_tokens for r in runs)
            generated = sum(r.spent.tokens_generated for r in runs)
            later = sum(r.spent.prm_tokens for r in runs[1:]) / sum(r.spent.tokens_generated for r in runs[1:])
            print(
                f"\n{kind} beam budget {budget}, {len(problems)} problems: PRM tokens per policy token "
                f"{prm_tokens / generated:.3f} ({prm_tokens} / {generated}); {later:.3f} after the first problem"
            )
            assert prm_tokens / generated <= 1.2
            for problem, r in zip(problems, runs):
                fresh = prm.score(problem, [x.steps for x in r.candidates])
                for x, f in zip(r.candidates, fresh):
                    assert len(x.scores) == len(f) > 0
                    assert x.scores == pytest.approx(f, abs=1e-5)
    finally:
        prm.engine.close()
        policy.close()


def test_a_head_from_another_import_is_refused(imported):
    """The fingerprint in the GGUF and in head.npz must agree (one line, exit 2 through the CLI)."""
    value, classifier = imported["value", "f32"], imported["classifier", "f32"]
    wrong = dict(value, model=imported["classifier", "f16"]["model"])
    with pytest.raises(Exception, match="does not belong"):
        head_prm(wrong)
    assert classifier["fingerprint"] != value["fingerprint"]


def _run(args, tmp_path, fails: bool = True):
    r = subprocess.run(
        [sys.executable, "-m", "ttc", *args], capture_output=True, timeout=120, env=ttc_env(), cwd=tmp_path
    )
    err = r.stderr.decode()
    assert "Traceback" not in err and (not fails or len(err.strip().splitlines()) == 1), err
    return r.returncode, err


def test_bad_checkpoints_are_one_line_errors(checkpoints, tmp_path):
    import json
    import shutil

    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _run(["prm", "import", str(empty), "--out", str(tmp_path / "o1")], tmp_path)
    assert code == 2 and "no config.json" in err

    causal = tmp_path / "causal-lm"
    shutil.copytree(checkpoints["value"], causal)
    cfg = json.loads((causal / "config.json").read_text())
    (causal / "config.json").write_text(json.dumps({**cfg, "architectures": ["Qwen2ForCausalLM"]}))
    code, err = _run(["prm", "import", str(causal), "--out", str(tmp_path / "o2")], tmp_path)
    assert code == 2 and "Qwen2ForCausalLM" in err and "not a supported reward head" in err

    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "bad-head"
    shutil.copytree(checkpoints["classifier"], bad)
    weights = load_file(str(bad / "model.safetensors"))
    weights["score.2.weight"] = np.zeros((3, 64), np.float32)
    save_file(weights, str(bad / "model.safetensors"))
    code, err = _run(["prm", "import", str(bad), "--out", str(tmp_path / "o3")], tmp_path)
    assert code == 2 and "score.2.weight" in err and "(3, 64)" in err and "(2, 64)" in err
    assert not (tmp_path / "o3" / "model.gguf").exists()


def test_a_preset_pairing_a_foreign_head_is_a_one_line_error(imported, tmp_path):
    value, classifier = imported["value", "f32"], imported["classifier", "f32"]
    section = {**value, "head": imported["value", "q8_0"]["head"]}  # same checkpoint, another import: agrees
    ok = {"name": "t", "model": "builtin:tiny-arith-policy.gguf", "step_delimiter": "\n", "prm": section}
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(ok))
    code, err = _run(["solve", "1+2", "--preset", str(tmp_path / "ok.yaml"), "--strategy", "best-of-n",
                      "--budget", "2", "--max-tokens", "8"], tmp_path, fails=False)  # fmt: skip
    assert code == 0, err
    foreign = {**ok, "prm": {**value, "head": classifier["head"], "format": "classifier-head"}}
    (tmp_path / "foreign.yaml").write_text(yaml.safe_dump(foreign))
    code, err = _run(["solve", "1+2", "--preset", str(tmp_path / "foreign.yaml"), "--strategy", "best-of-n",
                      "--budget", "2", "--max-tokens", "8"], tmp_path)  # fmt: skip
    assert code == 2 and "does not belong" in err


def test_head_formats_need_a_head_file(tmp_path):
    bad = {"name": "t", "model": "x.gguf", "prm": {"model": "p.gguf", "format": "value-head"}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(bad))
    code, err = _run(["solve", "1+2", "--preset", str(tmp_path / "p.yaml")], tmp_path)
    assert code == 2 and "prm.head" in err


@pytest.mark.parametrize(("preset", "kind"), [("qwen2.5-math-1.5b", "value"), ("qwen2.5-math-prm-7b", "classifier")])
def test_shipped_presets_read_solutions_as_the_import_says(preset, kind, imported):
    """The head presets' prm sections say what `ttc prm import` writes for a checkpoint of their layout."""
    prm = load_preset(preset).prm
    section = imported[kind, "f16"]
    for key in ("format", "template", "step_tag", "step_separator", "aggregation"):
        assert getattr(prm, key) == section[key], key
    assert prm.model.endswith("/model.gguf") and prm.head.endswith("/head.npz")


def test_a_head_prm_over_http_is_refused_in_one_line(imported, tmp_path):
    section = imported["value", "f32"]
    preset = {
        "name": "t", "model": "builtin:tiny-arith-policy.gguf", "step_delimiter": "\n", "prm": section,
        "backend": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
    }  # fmt: skip
    (tmp_path / "http.yaml").write_text(yaml.safe_dump(preset))
    code, err = _run(["solve", "1+2", "--preset", str(tmp_path / "http.yaml"), "--strategy", "beam"], tmp_path)
    assert code == 2 and "hidden states" in err and "in-process" in err
