"""Tiny thinking models for the tests: GGUFs whose chat templates are written in the real families' form
(Qwen3, DeepSeek-R1 distills, gpt-oss) and whose logits are steered so that they emit markers on cue.

The steering is by construction: each token's embedding is a one-hot row, every block's attention output and
feed-forward down-projection are zero, so the final hidden state of a token is its own (normalized) one-hot
row and the output matrix is a table of next-token logits. The model is a bigram chain with the transition
probabilities we write down:

    Qwen3 form   ...assistant\\n -> <think> -> 7 7 7 ... (each 7 ends the block with probability q) -> </think>
                 -> \\n\\n -> \\boxed{42} -> <|im_end|>
    R1 form      the prompt ends in "<think>\\n", so the chain starts inside the block at 7 7 7 ...

"\\n\\n" is one token of these vocabularies, so a prompt whose block was closed by the template (Qwen3 with
enable_thinking=false) goes straight on to the answer. The thinking filler is a digit on purpose: a reader
that took "the last number" from an unfinished block would answer 777..., never 42. The continuation word
"Wait" leads back into the filler (t -> 7).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttc.builtin.gguf_llama import ByteVocab, GGUFSpec, LlamaShape, tensor_shapes, write_llama_gguf

ANSWER = "\n\n\\boxed{42}"

QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{%- set content = message.content %}"
    "{%- if '</think>' in content %}{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}"
    "{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
QWEN3_TOKENS = ("<|im_start|>", "<|im_end|>", "<think>", "</think>", "\n\n")

R1_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}{%- endif %}"
    "{%- if message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{%- endif %}"
    "{%- endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)
R1_TOKENS = ("<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>", "<think>", "</think>", "\n\n")

GPT_OSS_TEMPLATE = (
    "<|start|>system<|message|>Reasoning: {{ reasoning_effort | default('medium') }}<|end|>"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{%- if message.thinking %}{{ '<|start|>assistant<|channel|>analysis<|message|>' + message.thinking + '<|end|>' }}"
    "{%- endif %}{{ '<|start|>assistant<|channel|>final<|message|>' + message.content + '<|return|>' }}"
    "{%- else %}{{ '<|start|>' + message.role + '<|message|>' + message.content + '<|end|>' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|start|>assistant{%- endif %}"
)
GPT_OSS_TOKENS = ("<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>")


def _chain(text: str) -> list[tuple[str, str]]:
    """Consecutive pairs of the characters of `text` (one token each in these vocabularies)."""
    return list(zip(text, text[1:]))


def transitions(family: str, q: float) -> dict[str, dict[str, float]]:
    """The bigram table of a family's model; `q` is the chance that a thinking token ends the block."""
    end = {"qwen3": "<|im_end|>", "r1": "<｜end▁of▁sentence｜>", "gpt-oss": "<|return|>"}[family]
    t: dict[str, dict[str, float]] = {
        "7": {"7": 1.0 - q, "</think>": q},
        "</think>": {"\n\n": 1.0},
        "\n\n": {"\\": 1.0},
        "}": {end: 1.0},
        "W": {"a": 1.0}, "a": {"i": 1.0}, "i": {"t": 1.0}, "t": {"7": 1.0},
    }  # fmt: skip
    for a, b in _chain("\\boxed{42}"):
        t[a] = {b: 1.0}
    if family == "qwen3":
        t["\n"] = {"<think>": 1.0}
        t["<think>"] = {"7": 1.0}
    else:  # the prompt opened the block: its last token "\n" leads into the filler
        t["\n"] = {"7": 1.0}
    return t


def write_thinking_gguf(path: Path, family: str = "qwen3", q: float = 0.05, n_ctx: int = 4096) -> Path:
    """A bigram thinking model of `family` (qwen3, r1 or gpt-oss) at `path`."""
    user = {"qwen3": QWEN3_TOKENS, "r1": R1_TOKENS, "gpt-oss": GPT_OSS_TOKENS}[family]
    template = {"qwen3": QWEN3_TEMPLATE, "r1": R1_TEMPLATE, "gpt-oss": GPT_OSS_TEMPLATE}[family]
    vocab = ByteVocab(user_tokens=user)
    n = vocab.size
    d = n + (-n % 8)  # room for a one-hot row per token, a multiple of the heads
    shape = LlamaShape(n_vocab=n, n_embd=d, n_layer=1, n_head=4, n_head_kv=4, n_ff=16, n_ctx=n_ctx)
    tensors = {k: np.zeros(s, dtype=np.float32) for k, s in tensor_shapes(shape).items()}
    for k, s in tensor_shapes(shape).items():
        if len(s) == 1:
            tensors[k] = np.ones(s, dtype=np.float32)
    tensors["token_embd.weight"][np.arange(n), np.arange(n)] = 1.0
    # the normalized one-hot row has sqrt(d / (1 + d * eps)) at its token; logits = output @ that
    gain = np.sqrt(d / (1.0 + d * shape.rms_eps))
    logits = np.full((n, n), -30.0, dtype=np.float32)  # logits[next, current]

    def tid(tok: str) -> int:
        return vocab.user_token_id(tok) if tok in user else tok.encode("utf-8")[0]

    end = {"qwen3": "<|im_end|>", "r1": "<｜end▁of▁sentence｜>", "gpt-oss": "<|return|>"}[family]
    logits[tid(end), :] = 0.0  # any token not in the table ends the generation
    for cur, nxt in transitions(family, q).items():
        logits[:, tid(cur)] = -30.0
        for tok, p in nxt.items():
            logits[tid(tok), tid(cur)] = float(np.log(p))
    tensors["output.weight"][:, :n] = logits / gain
    spec = GGUFSpec(name=f"tiny-{family}", vocab=vocab, chat_template=template, matrix_dtype="f32")
    return write_llama_gguf(path, shape, tensors, spec)


PRESET = """\
name: {name}
description: a tiny {family}-form thinking model for the tests
model: {model}
prompt:
  format: chat
  template: "{{problem}}"
step_delimiter: "\\n"
answer:
  format: boxed
  last_number_fallback: true
sampling:
  temperature: 1.0
  max_tokens: {max_tokens}
{extra}"""


def write_preset(folder: Path, model: Path, family: str, max_tokens: int = 256, extra: str = "") -> Path:
    path = folder / f"think-{family}-{model.stem}.yaml"
    path.write_text(PRESET.format(name=path.stem, family=family, model=model, max_tokens=max_tokens, extra=extra))
    return path
