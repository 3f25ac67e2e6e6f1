"""Presets are strict and side-effect free; model references and prompt formats resolve as documented."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import CHATML, REPO, make_tiny_gguf

from ttc.engine.models import resolve_model
from ttc.errors import UsageError
from ttc.presets import Preset, PromptConfig, list_presets, load_preset
from ttc.prompts import problem_prompt
from ttc.solve import SamplingOverrides


@pytest.mark.parametrize("name", sorted(list_presets()))
def test_every_shipped_preset_validates(name):
    p = load_preset(name)
    assert p.name == name and "{problem}" in p.prompt.template
    assert p.model or name in ("chat-self-judge", "base-few-shot")  # those take --model


def write(tmp_path, text: str):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return str(p)


def test_unknown_nested_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "model: x.gguf\nsampling:\n  temprature: 0.3\n")
    with pytest.raises(UsageError, match=r"sampling\.temprature.*did you mean 'sampling\.temperature'") as e:
        load_preset(path)
    assert path in str(e.value)


@pytest.mark.parametrize(
    "text,key",
    [
        ("model: 3\n", "model"),
        ("model: x\nsampling: {top_k: 1.5}\n", "sampling.top_k"),
        ("model: x\nstop: [1, 2]\n", "stop[0]"),
        ("model: x\nanswer: boxed\n", "answer"),
        ("model: x\nsampling: {temperature: yes}\n", "sampling.temperature"),
    ],
)
def test_wrong_types_name_the_key(tmp_path, text, key):
    with pytest.raises(UsageError, match=re.escape(f"key '{key}'")):
        load_preset(write(tmp_path, text))


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(UsageError, match=r"p\.yaml: line \d+ invalid YAML"):
        load_preset(write(tmp_path, "model: x\nsampling: [\n"))


def test_flags_override_preset_override_defaults(tmp_path):
    p = load_preset(write(tmp_path, "model: x\nsampling: {temperature: 0.3, max_tokens: 99}\n"))
    params = SamplingOverrides(max_tokens=7).apply(p)
    assert (params.temperature, params.max_tokens, params.top_p) == (0.3, 7, 1.0)
    with pytest.raises(UsageError, match="temperature"):
        SamplingOverrides(temperature=-1).apply(p)


def test_raw_template_leaves_latex_braces_alone(engine):
    preset = Preset(model="x", prompt=PromptConfig(template="Q: {problem}\nA:"))
    assert problem_prompt(preset, engine, "Find $\\frac{1}{2}+{x}$") == "Q: Find $\\frac{1}{2}+{x}$\nA:"


def test_chat_format_uses_the_models_own_template(tmp_path):
    from ttc.engine.llama import LlamaEngine

    eng = LlamaEngine(str(make_tiny_gguf(tmp_path / "chat.gguf", chat_template=CHATML)), n_threads=1)
    preset = Preset(model="x", prompt=PromptConfig(format="chat", system="Be brief.", template="Solve {problem}"))
    text = problem_prompt(preset, eng, "1+1")
    assert (
        text
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSolve 1+1<|im_end|>\n<|im_start|>assistant\n"
    )
    eng.close()


def test_chat_format_without_a_template_is_a_usage_error(engine):
    with pytest.raises(UsageError, match="no chat template"):
        problem_prompt(Preset(model="x", prompt=PromptConfig(format="chat")), engine, "1+1")


def test_model_references(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(UsageError, match="folder"):
        resolve_model(str(tmp_path))
    with pytest.raises(UsageError, match="built-in"):
        resolve_model("builtin:no-such-model.gguf")
    with pytest.raises(UsageError, match="hf://owner/repo/file.gguf"):
        resolve_model("hf://just-a-repo")
    local = make_tiny_gguf(tmp_path / "m.gguf")
    assert resolve_model("m.gguf", base_dir=tmp_path) == local


def test_hub_reference_offline_is_a_clear_runtime_error(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-m", "ttc", "solve", "1+1", "--preset", "qwen2.5-math-1.5b",
         "--model", "hf://someone/some-repo/model.gguf"],
        capture_output=True, timeout=120, env=env, cwd=REPO,
    )  # fmt: skip
    err = r.stderr.decode()
    assert r.returncode == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "someone/some-repo" in err
