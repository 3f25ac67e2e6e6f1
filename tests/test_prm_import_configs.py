"""`ttc prm import` reads a checkpoint's config.json as transformers does, for Qwen2, Qwen3 and Llama backbones.

Tiny checkpoints are written by the pinned transformers (tests/hf_checkpoints.py) and the reference is the
model transformers itself builds from the config.json it reads. The matrix covers, for each backbone, value and
classifier heads, tied and untied embeddings, f32 and bf16 weights, one and two shards, rotary bases 1e4 and
1e6, and the older config layout (top-level rope_theta, rope_scaling, torch_dtype), two checkpoints a backbone
combining them; further rows cover the rotary scalings (linear, yarn, llama3), head_dim unequal to
hidden/heads, and llama's attention and MLP biases. Each is imported at f32 and f16 and scored on several
problems of several steps, some with newlines inside. Bad configs are refused in one line, exit 2, no files.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import ttc_env
from hf_checkpoints import TEXTS, hf_ids, make_checkpoint, reference_scores
from test_prm_heads import head_prm, reference_input

from ttc.cli import main
from ttc.engine.llama import LlamaEngine
from ttc.prm.hf_config import DEFAULTS

pytest.importorskip("transformers")

PROBLEMS = [
    "What is 2+2?",
    "Natalia sold 48 clips in April and half as many in May. How many in all?",
    "Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4. She sells the rest at $2. How much a day?",
]
SOLUTIONS = [
    [["First, 2 + 2 = 4.\n\n", "So the answer is \\boxed{4}."], ["2+2 is\nfour\n\n", "\\boxed{4}"]],
    [["In May she sold 48/2 = 24 clips.\n\n", "In all, 48+24 = 72.\n\n", "The answer is \\boxed{72}."]],
    [
        ["She uses 3 + 4 = 7 eggs:\n   - 3 for breakfast\n   - 4 for muffins\n\n", "16 - 7 = 9 eggs.\n\n",
         "9 * 2 = 18, so \\boxed{18}."],
        ["Eggs left:\n\n16 - 7 = 9.\n\n", "She makes \\boxed{18}."],
    ],
]  # fmt: skip
# Largest |ttc - transformers| per export type. f32: the 1e-5 (measured at most 3.2e-6, the yarn row).
# f16: the issue asks 1e-3, measured here 6e-4 to 3.5e-3 (yarn, whose attention factor 1.14 sharpens attention);
# the excess is llama.cpp's CPU f16 matmul rounding activations to f16 (with an f32 KV cache and no flash
# attention a bf16 checkpoint's hidden states, whose f16 weights are exact, still move by 9e-4 rms at rms 1),
# so the bound is the measured worst with some room, not the figure.
BOUNDS = {"f32": 1e-5, "f16": 5e-3}
_SCALE = {"original_max_position_embeddings": 64}  # short, so that scaling changes the scores of ~100 tokens
ROWS = {  # name -> (kind, make_checkpoint arguments)
    "qwen2-a": ("value", dict(backbone="qwen2")),
    "qwen2-b": ("classifier", dict(backbone="qwen2", tie=False, dtype="bfloat16", shards=2, rope_theta=1e6,
                                   old_layout=True)),
    "qwen3-a": ("value", dict(backbone="qwen3", tie=False, dtype="bfloat16", shards=2, rope_theta=1e6, head_dim=32)),
    "qwen3-b": ("classifier", dict(backbone="qwen3", head_dim=16, old_layout=True)),
    "llama-a": ("classifier", dict(backbone="llama", dtype="bfloat16", rope_theta=1e6, attention_bias=True,
                                   mlp_bias=True)),
    "llama-b": ("value", dict(backbone="llama", tie=False, shards=2, old_layout=True)),
    "qwen2-linear": ("value", dict(backbone="qwen2", rope={"rope_type": "linear", "factor": 4.0})),
    "qwen2-yarn-old": ("classifier", dict(backbone="qwen2", old_layout=True,
                                          rope={"rope_type": "yarn", "factor": 4.0, **_SCALE})),
    "qwen3-yarn": ("value", dict(backbone="qwen3", head_dim=16, rope={"rope_type": "yarn", "factor": 4.0,
                                                                      "attention_factor": 0.8, **_SCALE})),
    "llama-llama3": ("value", dict(backbone="llama", rope={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                           "high_freq_factor": 4.0, **_SCALE})),
}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-configs")
    return {name: make_checkpoint(root / name, kind, seed=5, **kw) for name, (kind, kw) in ROWS.items()}


@pytest.fixture(scope="module")
def imported(checkpoints, tmp_path_factory):
    """(row, type) -> the prm: section `ttc prm import` wrote."""
    out = {}
    for name, folder in checkpoints.items():
        for qtype in BOUNDS:
            dest = tmp_path_factory.mktemp(f"{name}-{qtype}")
            assert main(["prm", "import", str(folder), "--out", str(dest), "--type", qtype]) == 0
            out[name, qtype] = yaml.safe_load((dest / "prm.yaml").read_text())["prm"]
    return out


def test_the_matrix_covers_every_value_of_every_dimension_for_every_backbone():
    seen = {}
    for kind, kw in ROWS.values():
        for dim, value in (("kind", kind), ("tie", kw.get("tie", True)), ("dtype", kw.get("dtype", "float32")),
                           ("shards", kw.get("shards", 1)), ("theta", kw.get("rope_theta", 1e4)),
                           ("old", kw.get("old_layout", False))):  # fmt: skip
            seen.setdefault((kw["backbone"], dim), set()).add(value)
    for backbone in DEFAULTS:
        for dim, values in (("kind", {"value", "classifier"}), ("tie", {True, False}),
                            ("dtype", {"float32", "bfloat16"}), ("shards", {1, 2}), ("theta", {1e4, 1e6}),
                            ("old", {True, False})):  # fmt: skip
            assert seen[backbone, dim] == values, (backbone, dim)


def test_the_import_defaults_are_the_transformers_config_defaults():
    import transformers

    classes = {"qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config, "llama": transformers.LlamaConfig}
    for backbone, defaults in DEFAULTS.items():
        fields = {f.name: f.default for f in dataclasses.fields(classes[backbone])}
        for key, value in defaults.items():
            assert fields[key] == value, (backbone, key)
        assert classes[backbone].default_theta == 10000.0


@pytest.mark.parametrize("qtype", list(BOUNDS))
@pytest.mark.parametrize("row", list(ROWS))
def test_scores_equal_transformers_for_every_config(row, qtype, checkpoints, imported):
    kind, folder = ROWS[row][0], checkpoints[row]
    prm = head_prm(imported[row, qtype])
    worst = 0.0
    try:
        for problem, solutions in zip(PROBLEMS, SOLUTIONS):
            got = prm.score(problem, solutions)
            for steps, g in zip(solutions, got):
                ids, pos = reference_input(kind, folder, problem, steps)
                ref = reference_scores(folder, ids, pos)
                assert len(g) == len(ref) == len(steps)
                worst = max(worst, float(np.max(np.abs(np.array(g) - np.array(ref)))))
    finally:
        prm.engine.close()
    print(f"\nmax |ttc - transformers| {row} {qtype}: {worst:.2e}")
    assert worst <= BOUNDS[qtype]


@pytest.mark.parametrize("row", ["qwen2-b", "qwen3-a", "llama-a", "qwen2-yarn-old", "llama-llama3"])
def test_what_the_config_says_changes_the_reference(row, checkpoints, tmp_path):
    """Each rotary setting the matrix covers moves transformers' scores, so agreeing with them is not luck: the
    same weights under the plain rotary base 1e4 (the value the old import fell back to) score otherwise."""
    kind, folder = ROWS[row][0], checkpoints[row]
    plain = tmp_path / "plain"
    shutil.copytree(folder, plain)
    cfg = json.loads((plain / "config.json").read_text())
    for key in ("rope_parameters", "rope_scaling", "rope_theta"):
        cfg.pop(key, None)
    (plain / "config.json").write_text(json.dumps(cfg))
    ids, pos = reference_input(kind, folder, PROBLEMS[1], SOLUTIONS[1][0])
    moved = np.abs(np.array(reference_scores(folder, ids, pos)) - np.array(reference_scores(plain, ids, pos)))
    assert moved.max() > 0.02, moved


def test_a_rotary_base_inside_rope_parameters_is_read(checkpoints, imported):
    """The issue's defect: transformers 5 writes the base inside rope_parameters; it must reach the GGUF."""
    cfg = json.loads((checkpoints["qwen3-a"] / "config.json").read_text())
    assert "rope_theta" not in cfg and cfg["rope_parameters"]["rope_theta"] == 1e6
    eng = LlamaEngine(imported["qwen3-a", "f32"]["model"], n_threads=1)
    try:
        assert float(eng.info.metadata["qwen3.rope.freq_base"]) == 1e6
    finally:
        eng.close()


@pytest.mark.parametrize("row", ["qwen3-a", "llama-a"])
def test_gguf_tokenizes_as_the_hf_tokenizer_for_each_backbone(row, checkpoints, imported):
    eng = LlamaEngine(imported[row, "f32"]["model"], n_threads=1)
    try:
        for text in TEXTS:
            assert eng.tokenize(text, add_bos=False, special=True) == hf_ids(checkpoints[row], text), text
    finally:
        eng.close()


def test_a_qwen2_tokenizer_class_splits_as_transformers_5_does(checkpoints, tmp_path):
    """transformers 5's Qwen2Tokenizer splits with Qwen2's regex whatever tokenizer.json says: so must the GGUF
    (a Llama 3 regex in tokenizer.json, digits in threes, under tokenizer_class Qwen2Tokenizer)."""
    folder = tmp_path / "ck"
    shutil.copytree(checkpoints["llama-b"], folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "tokenizer_class": "Qwen2Tokenizer"}))
    assert main(["prm", "import", str(folder), "--out", str(tmp_path / "out"), "--type", "f32"]) == 0
    eng = LlamaEngine(str(tmp_path / "out" / "model.gguf"), n_threads=1)
    try:
        assert hf_ids(folder, "48 clips") != hf_ids(checkpoints["llama-b"], "48 clips")  # the class matters
        for text in TEXTS:
            assert eng.tokenize(text, add_bos=False, special=True) == hf_ids(folder, text), text
    finally:
        eng.close()


def test_a_step_with_newlines_reads_as_each_reference_does(imported):
    """Skywork (value head, step token "\\n"): the newlines inside a step are step tokens between its pieces,
    each piece encoded alone; Qwen2.5-Math-PRM (classifier, "<extra_0>"): the newlines stay text."""
    step = "She uses 7 eggs:\n   - 3 for breakfast\n\n   - 4 for muffins\n\n"
    value, classifier = head_prm(imported["qwen2-a", "f32"]), head_prm(imported["qwen2-b", "f32"])
    try:
        ids, at = value.piece(step)
        tag = value.tag_id
        pieces = ["She uses 7 eggs:", "   - 3 for breakfast", "", "   - 4 for muffins"]
        want = [t for p in pieces for t in value.engine.tokenize(p, add_bos=False, special=False) + [tag]]
        assert ids == want and at == len(ids) - 1
        ids, at = classifier.piece(step)
        text = classifier.engine.tokenize(step.strip("\n"), add_bos=False, special=False)
        assert ids == text + [classifier.tag_id] and ids.count(classifier.tag_id) == 1
    finally:
        value.engine.close()
        classifier.engine.close()


def test_the_import_prints_one_line_saying_what_it_read(checkpoints, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "ttc", "prm", "import", str(checkpoints["qwen2-yarn-old"]), "--out", str(tmp_path)],
        capture_output=True, timeout=120, env=ttc_env(), text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "prm.yaml")
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    for part in ("qwen2 backbone", "2 layers", "4/2 heads/kv heads", "rotary base 10000", "yarn scaling x4 from 64",
                 "dtype float32", "classifier-head"):  # fmt: skip
        assert part in lines[0], lines[0]


def _edit(folder, tmp_path, change) -> str:
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    cfg = json.loads((bad / "config.json").read_text())
    change(cfg)
    (bad / "config.json").write_text(json.dumps(cfg))
    return str(bad)


BAD = {  # name -> (row, config change, words the one-line error must have)
    "unknown rope type": ("qwen2-a", lambda c: c["rope_parameters"].update(rope_type="dynamic", factor=2.0),
                          ["rope_parameters.rope_type", "'dynamic'"]),
    "unknown old-layout rope type": ("qwen2-b", lambda c: c.update(rope_scaling={"type": "longrope", "factor": 2.0}),
                                     ["rope_scaling.type", "'longrope'"]),
    "field changing the forward pass": ("qwen3-a", lambda c: c.update(attn_logit_softcapping=30.0),
                                        ["'attn_logit_softcapping'"]),
    "sliding window": ("qwen2-a", lambda c: c.update(use_sliding_window=True, sliding_window=16, max_window_layers=1,
                                                     layer_types=None), ["use_sliding_window", "window of 16"]),
    "llama3 rope on qwen2": ("qwen2-a", lambda c: c["rope_parameters"].update(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0), ["'llama3'", "qwen2"]),
    "yarn betas": ("qwen2-yarn-old", lambda c: c["rope_scaling"].update(beta_fast=16), ["beta_fast 16"]),
    "qwen3 attention bias": ("qwen3-b", lambda c: c.update(attention_bias=True), ["attention_bias"]),
    "partial rotary": ("llama-a", lambda c: c.update(partial_rotary_factor=0.5), ["partial_rotary_factor 0.5"]),
    "activation": ("llama-b", lambda c: c.update(hidden_act="gelu"), ["hidden_act 'gelu'"]),
    "other backbone": ("llama-b", lambda c: c.update(model_type="mistral", architectures=["MistralForPrmModel"]),
                       ["model_type 'mistral'", "qwen2, qwen3, llama"]),
    "head_dim the weights do not have": ("qwen3-a", lambda c: c.update(head_dim=8), ["q_proj.weight", "(32, 64)"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_config_is_one_line_exit_2_and_no_files(case, checkpoints, tmp_path, capsys):
    row, change, words = BAD[case]
    folder = _edit(checkpoints[row], tmp_path, change)
    out = tmp_path / "out"
    assert main(["prm", "import", folder, "--out", str(out)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    for w in words:
        assert w in err[0], err[0]
    assert not out.exists()


def test_a_missing_shard_is_one_line(checkpoints, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(checkpoints["llama-b"], bad)
    (bad / "model-00002-of-00002.safetensors").unlink()
    r = subprocess.run([sys.executable, "-m", "ttc", "prm", "import", str(bad), "--out", str(tmp_path / "out")],
                       capture_output=True, timeout=120, env=ttc_env(), text=True)  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "model-00002-of-00002.safetensors is missing" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
