"""Tiny random Hugging Face PRM checkpoints for the head-PRM tests and benchmark, written with transformers.

A Qwen2, Qwen3 or Llama backbone (random, fixed seed) plus a head laid out as in the real checkpoints:
  value       Skywork-o1-Open-PRM: architectures ["Qwen2ForPrmModel"], `v_head.summary.{weight,bias}`
  classifier  Qwen2.5-Math-PRM: architectures ["Qwen2ForProcessRewardModel"], `score.0.*` Linear(h, h),
              ReLU, `score.2.*` Linear(h, 2)
and a byte-level BPE tokenizer.json trained with `tokenizers` on a few lines of math, with Qwen2's
pre-tokenizer regex (Llama 3's for a Llama backbone) and Qwen's special tokens (<|endoftext|>, <|im_start|>,
<|im_end|>, <extra_0>).

`reference_scores` is the reference: the backbone's `last_hidden_state` through the head, in float32, from the
model transformers builds out of the config.json it reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "What is 12 + 30? First, 12 + 30 = 42. So the answer is \\boxed{42}.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Step 1: Let x be the number of apples. Step 2: Then 3x = 27, so x = 9.",
    "The area of a circle is \\pi r^2; with r = 5 it is 25\\pi. Therefore the final answer is 25\\pi.",
    "We compute (7 * 8) - 6 = 56 - 6 = 50, and 50 / 2 = 25. It's done, isn't it? They'll see.",
    "Ünïcödé ✓ naïve café: 3² = 9 — fine.\n\nNew paragraph\twith a tab.",
]

# Texts the GGUF must tokenize exactly as the HF tokenizer does.
TEXTS = [
    "What is 2+2?",
    "First, 2 + 2 = 4.\nSo the answer is \\boxed{4}.",
    "  leading spaces and trailing   ",
    "Natalia sold 48/2 = 24 clips in May.\n\nIn all, 48+24 = 72.",
    "It's 3.14159; we'll round: ≈ 3.14 — naïve ✓ 😀",
    "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\nStep one<extra_0>Step two<extra_0>",
    "<|endoftext|>Problem text\n",
]


def _tokenizer(path: Path, vocab_size: int, llama: bool = False) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_REGEX if llama else QWEN2_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[]
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.add_special_tokens(SPECIALS)
    tok.save(str(path / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast" if llama else "Qwen2Tokenizer",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "add_bos_token": False,
        "chat_template": CHATML,
        "model_max_length": 4096,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))


CLASSES = {"qwen2": ("Qwen2Config", "Qwen2Model"), "qwen3": ("Qwen3Config", "Qwen3Model"),
           "llama": ("LlamaConfig", "LlamaModel")}  # fmt: skip
PREFIX = {"qwen2": "Qwen2", "qwen3": "Qwen3", "llama": "Llama"}


def make_checkpoint(
    path: Path, kind: str, seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
    intermediate: int = 128, extra_vocab: int = 13, tie: bool = True, bpe_vocab: int = 400, init: float = 0.15,
    backbone: str = "qwen2", dtype: str = "float32", shards: int = 1, rope_theta: float = 10000.0,
    rope: dict | None = None, old_layout: bool = False, max_positions: int = 2048, **config,
) -> Path:  # fmt: skip
    """Write a tiny random PRM checkpoint of `kind` ("value" or "classifier") into folder `path`: a `backbone`
    (qwen2, qwen3, llama) with weights stored as `dtype` (float32 or bfloat16) in `shards` safetensors files,
    rotary base `rope_theta` and scaling `rope` (rope_parameters without rope_theta), `config` passed on to the
    transformers config class (head_dim, attention_bias, ...). config.json is the one transformers 5 saves;
    `old_layout` rewrites it as transformers 4 did (top-level rope_theta, rope_scaling with "type",
    torch_dtype, no layer_types)."""
    import torch
    import transformers
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    _tokenizer(path, bpe_vocab, llama=backbone == "llama")
    n_tok = len(json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]) + len(SPECIALS)
    torch.manual_seed(seed)
    arch = PREFIX[backbone] + {"value": "ForPrmModel", "classifier": "ForProcessRewardModel"}[kind]
    config_class, model_class = (getattr(transformers, n) for n in CLASSES[backbone])
    cfg = config_class(
        vocab_size=n_tok + extra_vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
        rope_parameters={"rope_type": "default", **(rope or {}), "rope_theta": rope_theta}, rms_norm_eps=1e-6,
        tie_word_embeddings=tie, initializer_range=init, bos_token_id=n_tok - 4, eos_token_id=n_tok - 2, **config,
    )  # fmt: skip
    model = model_class(cfg).float().eval()
    with torch.no_grad():  # norms away from 1 and biases away from 0, so a mistake in either shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if not tie:
        tensors["lm_head.weight"] = torch.randn(cfg.vocab_size, hidden) * 0.05
    g = torch.Generator().manual_seed(seed + 1)
    # The head's last layer is scaled and centred on the backbone's states at step tags (after the corpus's
    # sentences), so that step scores spread over (0, 1) instead of sitting at one value: an error in a
    # hidden state then shows.
    from tokenizers import Tokenizer

    tag = "\n" if kind == "value" else "<extra_0>"
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tag_id = tok.encode(tag).ids[-1]
    ids = [i for c in CORPUS for i in tok.encode(c.replace("\n", " ")).ids + [tag_id]]
    with torch.no_grad():
        h = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    h = h[torch.tensor(ids) == tag_id]
    if kind == "value":
        x, last = h, "v_head.summary"
        w = torch.randn(1, hidden, generator=g)
    else:
        tensors["score.0.weight"] = torch.randn(hidden, hidden, generator=g) / hidden**0.5
        tensors["score.0.bias"] = torch.randn(hidden, generator=g) * 0.1
        x, last = torch.relu(h @ tensors["score.0.weight"].T + tensors["score.0.bias"]), "score.2"
        w = torch.randn(2, hidden, generator=g)
    v = x @ w.T
    spread = (v[:, -1] - v[:, 0]).std() if kind == "classifier" else v[:, 0].std()
    w = w / spread
    tensors[f"{last}.weight"] = w.contiguous()
    tensors[f"{last}.bias"] = -(x @ w.T).mean(0)
    tensors = {k: v.to(getattr(torch, dtype)) for k, v in tensors.items()}
    names = list(tensors)
    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:  # as save_pretrained shards: model-0000i-of-0000n.safetensors and an index naming each tensor's file
        files = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
        weight_map = {n: files[i * shards // len(names)] for i, n in enumerate(names)}
        for f in files:
            save_file({n: tensors[n] for n in names if weight_map[n] == f}, str(path / f), metadata={"format": "pt"})
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                 "weight_map": weight_map}  # fmt: skip
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    cfg.save_pretrained(str(path))
    out = json.loads((path / "config.json").read_text())
    out["architectures"] = [arch]
    out["dtype"] = dtype
    if old_layout:
        out = to_old_layout(out)
    (path / "config.json").write_text(json.dumps(out, indent=1))
    return path


def to_old_layout(cfg: dict) -> dict:
    """A transformers-5 config.json as transformers 4 wrote it."""
    cfg = dict(cfg)
    params = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = params.pop("rope_theta")
    kind = params.pop("rope_type")
    cfg["rope_scaling"] = None if kind == "default" else {"type": kind, **params}
    cfg["torch_dtype"] = cfg.pop("dtype")
    cfg.pop("layer_types", None)
    return cfg


def hf_ids(path: Path, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path)).encode(text, add_special_tokens=False)


def load_weights(path: Path) -> dict:
    """Every tensor of the checkpoint's safetensors files (one or shards)."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def reference_hidden(path: Path, ids: list[int]) -> np.ndarray:
    """The backbone's last_hidden_state for `ids`, computed in float32 by transformers from the config it reads
    out of config.json: [len(ids), hidden]."""
    import torch
    import transformers

    cfg = transformers.AutoConfig.from_pretrained(str(path))
    model = getattr(transformers, CLASSES[cfg.model_type][1])(cfg).float().eval()
    sd = {k[len("model.") :]: v.float() for k, v in load_weights(path).items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    return out.float().numpy()


def reference_scores(path: Path, ids: list[int], positions: list[int]) -> list[float]:
    """Per-step scores at `positions` of `ids`: the head applied to last_hidden_state, in float32 torch."""
    import torch

    w = {k: v.float() for k, v in load_weights(path).items()}
    h = torch.from_numpy(reference_hidden(path, ids)[positions])
    if "v_head.summary.weight" in w:
        v = h @ w["v_head.summary.weight"].T + w["v_head.summary.bias"]
        return torch.sigmoid(v[:, 0]).tolist()
    x = torch.relu(h @ w["score.0.weight"].T + w["score.0.bias"])
    logits = x @ w["score.2.weight"].T + w["score.2.bias"]
    return torch.softmax(logits, dim=-1)[:, 1].tolist()
