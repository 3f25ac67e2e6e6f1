"""A classifier-head PRM over HTTP through vLLM's pooling API, on a fake vLLM that answers as vLLM's source says
(PoolingResponse; STEP pooling of Qwen2ForProcessRewardModel: the softmax over the head's classes at each token
whose id is the step tag) and computes its answers with transformers from a tiny random Qwen2.5-Math-PRM-style
checkpoint (tests/hf_checkpoints.py). The same checkpoint through `ttc prm import` (f32) runs in-process.

Invariants: ttc's scores over HTTP equal the in-process head PRM's on the same candidates, whole and step by
step (within 1e-4, the f32 bound of test_prm_heads.py); rows for every token are read at the tags too; a server
whose step tag is another token, a malformed answer, or a PRM server that is not vLLM is one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml
from conftest import REPO, JSONHandler, LoopbackServer, ttc_env
from hf_checkpoints import make_checkpoint, reference_scores

from ttc.cli import main
from ttc.engine.llama import LlamaEngine
from ttc.engine.openai import OpenAIEngine
from ttc.errors import TTCRuntimeError, UsageError
from ttc.presets import PRMConfig
from ttc.prm.heads import HeadPRM
from ttc.prm.pooled import PooledHeadPRM

pytest.importorskip("transformers")
pytest.importorskip("httpx")

BOUND = 1e-4  # |HTTP - in-process|: both are the checkpoint's f32 arithmetic (test_prm_heads.py measured 2.6e-7)
PROBLEMS = ["What is 2+2?", "Natalia sold 48 clips in April and half as many in May. How many in all?"]
SOLUTIONS = [
    [["First, 2 + 2 = 4.\n\n", "So the answer is \\boxed{4}."], ["It is 5.\n\n"], ["2+2 is\nfour\n\n", "\\boxed{4}"]],
    [["In May she sold 48/2 = 24 clips.\n\n", "In all, 48+24 = 72.\n\n", "The answer is \\boxed{72}."]],
]


class FakeVLLM(LoopbackServer):
    """`vllm serve CHECKPOINT` for a Qwen2ForProcessRewardModel, as far as ttc uses it: /v1/models, /tokenize and
    /pooling. `step_tag_id` is its pooler's (None: a row for every token); `mode` "ok", or "malformed" (each item
    lacks its `data`); `owner` the /v1/models owned_by."""

    def __init__(self, folder, step_tag_id: int | None, mode: str = "ok", owner: str = "vllm"):
        import torch
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

        self.tok = AutoTokenizer.from_pretrained(str(folder))
        weights = load_file(str(folder / "model.safetensors"))
        self.model = Qwen2Model(Qwen2Config.from_pretrained(str(folder))).eval()
        self.model.load_state_dict({k[len("model.") :]: v for k, v in weights.items() if k.startswith("model.")})
        self.head = [weights[f"score.{i}.{p}"] for i in (0, 2) for p in ("weight", "bias")]
        self.step_tag_id, self.mode, self.lock, self.calls = step_tag_id, mode, threading.Lock(), []
        self.torch, outer = torch, self

        class H(JSONHandler):
            def do_GET(self):
                self.send_json(*outer.answer(self.path, {}))

            def do_POST(self):
                self.send_json(*outer.answer(self.path, self.body()))

        self.owner = owner
        self.serve(H)

    def rows(self, ids: list[int]) -> list[list[float]]:
        """STEP pooling: softmax(score(h)) at each token whose id is the step tag (every token without one)."""
        torch = self.torch
        with self.lock, torch.no_grad():
            h = self.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        w0, b0, w2, b2 = self.head
        probs = torch.softmax(torch.relu(h @ w0.T + b0) @ w2.T + b2, dim=-1)
        keep = [i for i, t in enumerate(ids) if self.step_tag_id is None or t == self.step_tag_id]
        return probs[keep].tolist()

    def answer(self, path: str, body: dict):
        self.calls.append((path, body))
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": "tiny-prm", "object": "model", "owned_by": self.owner}]}
        if path == "/tokenize":
            ids = self.tok.encode(body["prompt"], add_special_tokens=body.get("add_special_tokens", True))
            return 200, {"count": len(ids), "max_model_len": 2048, "tokens": ids}
        if path == "/pooling":
            inputs = body["input"]
            items = [{"index": i, "object": "pooling", "data": self.rows(x)} for i, x in enumerate(inputs)]
            if self.mode == "malformed":
                items = [{"index": i, "object": "pooling"} for i in range(len(inputs))]
            n = sum(len(x) for x in inputs)
            usage = {"prompt_tokens": n, "total_tokens": n, "completion_tokens": 0}
            return 200, {"id": "pool-1", "object": "list", "created": int(time.time()), "model": body["model"],
                         "data": items, "usage": usage}  # fmt: skip
        return 404, {"detail": "Not Found"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("hf") / "classifier", "classifier", seed=3)


@pytest.fixture(scope="module")
def section(checkpoint, tmp_path_factory):
    """The prm: section `ttc prm import --type f32` writes for the checkpoint."""
    dest = tmp_path_factory.mktemp("classifier-f32")
    assert main(["prm", "import", str(checkpoint), "--out", str(dest), "--type", "f32"]) == 0
    return yaml.safe_load((dest / "prm.yaml").read_text())["prm"]


@pytest.fixture(scope="module")
def tag_id(checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(checkpoint)).convert_tokens_to_ids("<extra_0>")


@pytest.fixture(scope="module")
def local(section):
    prm = HeadPRM(LlamaEngine(section["model"], n_threads=2), PRMConfig(**section), "\n\n")
    yield prm
    prm.engine.close()


def served(url: str, section: dict) -> PooledHeadPRM:
    cfg = PRMConfig(**{**section, "head": None, "fingerprint": None, "model": "tiny-prm"})
    return PooledHeadPRM(OpenAIEngine(url), cfg, "\n\n")


def step_by_step(prm, problem: str, steps: list[str]) -> list[float]:
    sc = prm.scorer(problem, max_live=2, max_tokens=256)
    kid = sc.fork(0, 1)[0]
    sc.drop([0])
    out = [sc.add_steps([kid], [s])[0] for s in steps]
    sc.close()
    return out


@pytest.mark.parametrize("every_token", [False, True])
def test_scores_over_http_equal_the_in_process_head_prm(checkpoint, local, section, tag_id, every_token):
    fake = FakeVLLM(checkpoint, None if every_token else tag_id)
    try:
        prm = served(fake.url, section)
        worst = 0.0
        for problem, solutions in zip(PROBLEMS, SOLUTIONS):
            there, here = prm.score(problem, solutions), local.score(problem, solutions)
            assert [len(s) for s in there] == [len(s) for s in solutions]
            for a, b in zip(there, here):
                worst = max(worst, float(np.abs(np.array(a) - np.array(b)).max()))
            for steps in solutions:  # step-wise search reads the same tokens
                a, b = step_by_step(prm, problem, steps), step_by_step(local, problem, steps)
                worst = max(worst, float(np.abs(np.array(a) - np.array(b)).max()))
            ids = prm.engine.tokenize(prm.prefix(problem))
            full, pos = prm.tokens(solutions[0])
            ref = reference_scores(checkpoint, ids + full, [len(ids) + p for p in pos])
            assert there[0] == pytest.approx(ref, abs=BOUND)  # and both are transformers' own scores
        print(f"largest |HTTP - in-process| over all step scores: {worst:.1e}")
        assert worst <= BOUND
        pooled = [b for p, b in fake.calls if p == "/pooling"]
        assert pooled and all(isinstance(x, list) and isinstance(x[0], int) for b in pooled for x in b["input"])
        assert prm.usage.prompt_tokens > 0 and prm.usage.decode_calls == len(pooled)
        prm.engine.close()
    finally:
        fake.close()


def test_a_server_with_another_step_tag_or_not_vllm_is_one_line(checkpoint, section, tag_id):
    fake = FakeVLLM(checkpoint, tag_id + 1)  # a pooler configured for another token: no rows at ttc's tags
    try:
        with pytest.raises(TTCRuntimeError, match=f"step_tag_id\\W+{tag_id}") as e:
            served(fake.url, section).score(PROBLEMS[0], SOLUTIONS[0])
        assert "\n" not in str(e.value)
    finally:
        fake.close()
    fake = FakeVLLM(checkpoint, tag_id, owner="llamacpp")
    try:
        with pytest.raises(UsageError, match="vLLM's pooling API"):
            served(fake.url, section)
    finally:
        fake.close()


class FakePolicy(LoopbackServer):
    """A vLLM-style policy server that answers every completion with the same two-step solution."""

    TEXT = "First, 2 + 2 = 4.\n\nSo the answer is \\boxed{4}."

    def __init__(self):
        outer = self

        class H(JSONHandler):
            def do_GET(self):
                self.send_json(200, {"object": "list", "data": [{"id": "policy", "owned_by": "vllm"}]})

            def do_POST(self):
                n = int(self.body().get("n", 1))
                choices = [{"index": i, "text": outer.TEXT, "finish_reason": "stop", "stop_reason": None}
                           for i in range(n)]  # fmt: skip
                self.send_json(200, {"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 12 * n}})

        self.serve(H)


def test_solve_with_a_served_prm_scores_as_in_process_and_a_malformed_answer_is_one_line(
    checkpoint, local, section, tag_id, tmp_path
):
    policy = FakePolicy()
    try:
        for mode in ("ok", "malformed"):
            fake = FakeVLLM(checkpoint, tag_id, mode=mode)
            try:
                prm = {k: section[k] for k in ("format", "template", "step_tag", "step_separator", "aggregation")}
                preset = {
                    "name": "served-prm", "model": "policy", "step_delimiter": "\n\n",
                    "answer": {"format": "boxed"}, "sampling": {"max_tokens": 32},
                    "prm": {**prm, "model": "tiny-prm"},  # no head file: vLLM applies the head
                    "backend": {"kind": "openai", "base_url": policy.url, "prm_base_url": fake.url, "max_retries": 0},
                }  # fmt: skip
                (tmp_path / "p.yaml").write_text(yaml.safe_dump(preset))
                r = subprocess.run(
                    [sys.executable, "-m", "ttc", "solve", PROBLEMS[0], "-s", "best-of-n", "-b", "2", "--json",
                     "-p", str(tmp_path / "p.yaml")], capture_output=True, env=ttc_env(), cwd=REPO, timeout=300,
                )  # fmt: skip
                err = r.stderr.decode()
                if mode == "malformed":
                    assert r.returncode == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
                    assert "POST /pooling" in err and "data[0].data" in err
                    continue
                assert r.returncode == 0, err
                rec = json.loads(r.stdout)
                steps = [c["steps"] for c in rec["candidates"]]
                assert rec["answer"] == "4" and steps[0] == ["First, 2 + 2 = 4.\n\n", "So the answer is \\boxed{4}."]
                want = local.score(PROBLEMS[0], steps)
                for c, w in zip(rec["candidates"], want):
                    assert c["scores"] == pytest.approx(w, abs=BOUND)
                assert rec["spent"]["prm_tokens"] > 0
            finally:
                fake.close()
    finally:
        policy.close()
