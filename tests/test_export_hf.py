"""`python -m ttc.train export-hf`: the built-in pair in Hugging Face format, checked against transformers
(the reference a vLLM or SGLang server loads it with): the tokenizer gives llama.cpp's ids, the logits agree
with llama.cpp's on the GGUF, and greedy decoding writes the same solutions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
llama_cpp = pytest.importorskip("llama_cpp")

from conftest import REPO  # noqa: E402

from ttc.builtin.arith import read_dataset, solution_text  # noqa: E402
from ttc.builtin.train.formats import VOCAB, policy_prompt, prm_text  # noqa: E402
from ttc.builtin.train.report import llama_cpp_greedy  # noqa: E402

MODELS = REPO / "ttc" / "models"
# Largest |transformers - llama.cpp| logit, relative to the largest |logit| of the text: measured 1.19e-3 for
# the f32 policy and 4.8e-4 for the f16 PRM (its f16 weights widened exactly to f32 for transformers).
TOL = {"tiny-arith-policy": 3e-3, "tiny-arith-prm": 3e-3}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf")
    r = subprocess.run([sys.executable, "-m", "ttc.train", "export-hf", "--out", str(out)], capture_output=True,
                       cwd=REPO, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    return out


def test_the_folders_are_llama_checkpoints_with_the_gguf_shape(exported):
    cfg = json.loads((exported / "policy" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["vocab_size"] == VOCAB.size
    assert (cfg["hidden_size"], cfg["num_hidden_layers"]) == (128, 4)
    assert json.loads((exported / "prm" / "config.json").read_text())["num_hidden_layers"] == 6


def test_the_tokenizer_gives_llama_cpps_ids_on_the_shipped_problems_and_solutions(exported):
    tok = transformers.AutoTokenizer.from_pretrained(exported / "policy")
    llm = llama_cpp.Llama(str(MODELS / "tiny-arith-prm.gguf"), n_ctx=512, n_threads=1, verbose=False, vocab_only=True)
    problems = [r["problem"] for r in read_dataset()]
    texts = []
    for p in problems:
        texts += [policy_prompt(p) + solution_text(p), prm_text(p, solution_text(p).split("\n"))]
    texts += [" a  b\t\n\nc", "Ünïcödé ✓ 3² — ки<s>?"]
    for text in texts:
        want = llm.tokenize(text.encode(), add_bos=True, special=False)
        assert tok(text)["input_ids"] == want == VOCAB.encode(text, add_bos=True), text
    assert tok.decode(tok(texts[0])["input_ids"], skip_special_tokens=True) == texts[0]


@pytest.mark.parametrize("name", ["tiny-arith-policy", "tiny-arith-prm"])
def test_logits_agree_with_llama_cpp(exported, name):
    model = transformers.AutoModelForCausalLM.from_pretrained(exported / name.split("-")[-1], dtype=torch.float32)
    llm = llama_cpp.Llama(str(MODELS / f"{name}.gguf"), n_ctx=512, n_threads=1, logits_all=True, verbose=False)
    worst = 0.0
    for p in ("37+48-19", "5-9+12-1", "81-7+30-64+2-19+8-3"):
        ids = VOCAB.encode(prm_text(p, solution_text(p).split("\n")), add_bos=True)
        llm.reset()
        llm.eval(ids)
        want = np.array(llm.scores[: len(ids)])
        with torch.no_grad():
            got = model(torch.tensor([ids])).logits[0].numpy()
        worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
    print(f"{name}: worst relative logit difference {worst:.2e}")
    assert worst < TOL[name]


def test_transformers_greedy_equals_llama_cpp_greedy_on_50_held_out_problems(exported):
    torch.set_num_threads(2)
    tok = transformers.AutoTokenizer.from_pretrained(exported / "policy")
    model = transformers.AutoModelForCausalLM.from_pretrained(exported / "policy", dtype=torch.float32)
    problems = [r["problem"] for r in read_dataset()][:50]
    want = llama_cpp_greedy(MODELS / "tiny-arith-policy.gguf", problems, threads=1)
    got = []
    for p in problems:
        ids = torch.tensor([tok(policy_prompt(p))["input_ids"]])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=160, do_sample=False, eos_token_id=VOCAB.eos_id, pad_token_id=0)
        got.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    same = [a == b for a, b in zip(got, want)]
    assert all(same), [(p, a, b) for p, a, b, s in zip(problems, got, want, same) if not s]
