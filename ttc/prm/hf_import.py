"""`ttc prm import`: a Hugging Face PRM checkpoint with a reward head, as a GGUF backbone plus the head.

Supported (config `model_type` qwen2; the head found by its tensor names):
  Qwen2ForPrmModel (Skywork-o1-Open-PRM)             v_head.summary = Linear(h, 1)          -> value-head
  Qwen2ForProcessRewardModel (Qwen2.5-Math-PRM)      score.0 Linear(h, h), ReLU, score.2 (2) -> classifier-head
  Qwen2ForTokenClassification (H4's PRM-0.2)         score = Linear(h, 2)                   -> classifier-head

Written into the output folder:
  model.gguf   the backbone (architecture qwen2, tensors and keys as llama.cpp's qwen2 loader reads them;
               2-D weights in the chosen type, norms and biases f32) with the checkpoint's tokenizer
  head.npz     the head, float32: kind, layers w0, b0 (, w1, b1) as (out, in) and (out,), fingerprint
  prm.yaml     a preset fragment (a `prm:` section) naming both, with the scoring format
The fingerprint (sha256 of config.json, the head and the token embedding) is stored in both the GGUF
(`ttc.prm.fingerprint`) and head.npz, so a head is never applied to a backbone it was not trained with.
Weights are read from *.safetensors with numpy (F32, F16, BF16), one tensor at a time.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from ..errors import TTCRuntimeError, UsageError
from .hf_vocab import read_vocab, write_vocab

ARCHITECTURES = {
    "Qwen2ForPrmModel": "value-head",
    "Qwen2ForProcessRewardModel": "classifier-head",
    "Qwen2ForTokenClassification": "classifier-head",
}
TYPES = ("f16", "f32", "q8_0")
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
FINGERPRINT_KEY = "ttc.prm.fingerprint"
_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}

_LAYER = {  # HF Qwen2 layer tensor -> GGUF name (after "blk.N.")
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


class SafeTensors:
    """The tensors of a checkpoint's *.safetensors files, read on demand with numpy."""

    def __init__(self, folder: Path):
        self.index: dict[str, tuple[Path, str, tuple[int, ...], int, int]] = {}
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            found = "pytorch_model.bin only" if (folder / "pytorch_model.bin").exists() else "none"
            raise UsageError(f"{folder}: no *.safetensors weights (found {found}); save the checkpoint as safetensors")
        for f in files:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
            for name, t in header.items():
                if name != "__metadata__":
                    a, b = t["data_offsets"]
                    self.index[name] = (f, t["dtype"], tuple(t["shape"]), 8 + n + a, b - a)

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def shape(self, name: str) -> tuple[int, ...]:
        return self.index[name][2]

    def raw(self, name: str) -> bytes:
        f, _, _, start, size = self.index[name]
        with open(f, "rb") as fh:
            fh.seek(start)
            return fh.read(size)

    def get(self, name: str) -> np.ndarray:
        f, dtype, shape, start, size = self.index[name]
        if dtype not in _ST_DTYPES:
            raise UsageError(f"{f}: tensor {name} has dtype {dtype}; only F32, F16 and BF16 are supported")
        a = np.frombuffer(self.raw(name), dtype=_ST_DTYPES[dtype]).reshape(shape)
        if dtype == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        return a.astype(np.float32)


def resolve_source(source: str) -> Path:
    """A local checkpoint folder, or hf://owner/repo downloaded with huggingface_hub (config, tokenizer,
    safetensors only)."""
    if source.startswith("hf://"):
        repo = source[len("hf://") :].strip("/")
        if repo.count("/") != 1:
            raise UsageError(f"bad Hub reference '{source}': expected hf://owner/repo")
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id=repo, allow_patterns=["*.json", "*.safetensors"]))
        except Exception as e:  # offline, missing repo, auth: all end here
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise TTCRuntimeError(
                f"could not download Hub repo {repo} ({type(e).__name__}: {first[:160]}); if offline, "
                "download the checkpoint elsewhere and pass its folder"
            ) from None
    path = Path(source).expanduser()
    if not path.is_dir():
        raise UsageError(f"checkpoint folder not found: {source}")
    return path


def read_config(folder: Path) -> tuple[dict, str]:
    """The checkpoint's config.json and the head format its architecture has."""
    path = folder / "config.json"
    if not path.is_file():
        raise UsageError(f"{folder}: no config.json (not a Hugging Face checkpoint folder)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UsageError(f"{path}: not readable JSON ({e})") from None
    archs = cfg.get("architectures") or []
    arch = next((a for a in archs if a in ARCHITECTURES), None)
    if cfg.get("model_type") != "qwen2" or arch is None:
        raise UsageError(
            f"{path}: architecture {archs or cfg.get('model_type')!r} is not supported "
            f"(supported: qwen2 with {', '.join(ARCHITECTURES)})"
        )
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        if not isinstance(cfg.get(key), int):
            raise UsageError(f"{path}: '{key}' is missing or not an integer")
    return cfg, ARCHITECTURES[arch]


def _expect(st: SafeTensors, name: str, shape: tuple[int, ...], where: Path) -> np.ndarray:
    if name not in st:
        raise UsageError(f"{where}: head tensor {name} is missing")
    if st.shape(name) != shape:
        raise UsageError(f"{where}: head tensor {name} has shape {st.shape(name)}, expected {shape}")
    return st.get(name)


def read_head(st: SafeTensors, fmt: str, hidden: int, where: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The head as a list of (weight (out, in), bias (out,)) layers, ReLU between them."""
    if fmt == "value-head":
        w = _expect(st, "v_head.summary.weight", (1, hidden), where)
        b = _expect(st, "v_head.summary.bias", (1,), where) if "v_head.summary.bias" in st else np.zeros(1, np.float32)
        return [(w, b)]
    if "score.0.weight" in st:
        return [
            (_expect(st, "score.0.weight", (hidden, hidden), where), _expect(st, "score.0.bias", (hidden,), where)),
            (_expect(st, "score.2.weight", (2, hidden), where), _expect(st, "score.2.bias", (2,), where)),
        ]
    if "score.weight" in st:
        w = _expect(st, "score.weight", (2, hidden), where)
        b = _expect(st, "score.bias", (2,), where) if "score.bias" in st else np.zeros(2, np.float32)
        return [(w, b)]
    raise UsageError(f"{where}: no classifier head (score.0.* and score.2.*, or score.weight) in the weights")


def _backbone_prefix(st: SafeTensors, where: Path) -> str:
    for name in st.index:
        if name.endswith("embed_tokens.weight"):
            return name[: -len("embed_tokens.weight")]
    raise UsageError(f"{where}: no embed_tokens.weight among the weights (not a Qwen2 backbone)")


def fingerprint(config_bytes: bytes, layers, embedding: bytes) -> str:
    h = hashlib.sha256(config_bytes)
    for w, b in layers:
        h.update(np.ascontiguousarray(w, np.float32).tobytes())
        h.update(np.ascontiguousarray(b, np.float32).tobytes())
    h.update(embedding)
    return h.hexdigest()[:32]


def _add_weight(writer, name: str, a: np.ndarray, qtype: str) -> None:
    import gguf

    if a.ndim == 1 or qtype == "f32":
        writer.add_tensor(name, a.astype(np.float32))
    elif qtype == "q8_0" and a.shape[-1] % 32 == 0:
        q = gguf.quants.quantize(a.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, a.astype(np.float16))


def write_gguf(path: Path, folder: Path, cfg: dict, st: SafeTensors, qtype: str, print_: str, name: str) -> None:
    import gguf

    hidden, n_layer = cfg["hidden_size"], cfg["num_hidden_layers"]
    n_head = cfg["num_attention_heads"]
    prefix = _backbone_prefix(st, folder)
    vocab = read_vocab(folder, st.shape(prefix + "embed_tokens.weight")[0])
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name(name)
    w.add_context_length(int(cfg.get("max_position_embeddings", 32768)))
    w.add_embedding_length(hidden)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(int(cfg.get("num_key_value_heads") or n_head))
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    w.add_file_type({"f32": 0, "f16": 1, "q8_0": 7}[qtype])
    w.add_string(FINGERPRINT_KEY, print_)
    write_vocab(w, vocab)
    _add_weight(w, "token_embd.weight", st.get(prefix + "embed_tokens.weight"), qtype)
    for i in range(n_layer):
        for hf, gg in _LAYER.items():
            key = f"{prefix}layers.{i}.{hf}"
            if key not in st:
                raise UsageError(f"{folder}: backbone tensor {key} is missing")
            _add_weight(w, f"blk.{i}.{gg}", st.get(key), qtype)
    _add_weight(w, "output_norm.weight", st.get(prefix + "norm.weight"), qtype)
    if "lm_head.weight" in st and not cfg.get("tie_word_embeddings", False):
        _add_weight(w, "output.weight", st.get("lm_head.weight"), qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def render_template(fmt: str, cfg_arch: list[str], folder: Path) -> dict:
    """The prm: fields that say how this PRM reads a solution (its template, step tag)."""
    vocab_cfg = {}
    if (folder / "tokenizer_config.json").is_file():
        vocab_cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    if fmt == "value-head":  # Skywork: BOS + problem + "\n", each step followed by the step token "\n"
        bos = _text(vocab_cfg.get("bos_token")) or ""
        return {"template": bos + "{problem}\n", "step_tag": "\n", "step_separator": ""}
    if "Qwen2ForTokenClassification" in cfg_arch:  # H4: steps separated by a blank line
        return {"template": "{problem}\n\n", "step_tag": "\n\n", "step_separator": ""}
    template = vocab_cfg.get("chat_template")
    if not isinstance(template, str):
        raise UsageError(f"{folder}: tokenizer_config.json has no chat_template (the PRM's prompt format)")
    import jinja2

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = [{"role": "system", "content": QWEN_PRM_SYSTEM}, {"role": "user", "content": "\x00PROBLEM\x00"}]
    text = env.from_string(template).render(messages=messages, add_generation_prompt=True)
    return {"template": text.replace("\x00PROBLEM\x00", "{problem}"), "step_tag": "<extra_0>", "step_separator": ""}


def _text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value if isinstance(value, str) else None


def import_checkpoint(source: str, out: str | Path, qtype: str = "f16") -> Path:
    """Import checkpoint `source` into folder `out`; return the path of the preset fragment written."""
    import jinja2.sandbox  # noqa: F401 - render_template's, imported here so a missing jinja2 fails early

    if qtype not in TYPES:
        raise UsageError(f"--type must be one of {', '.join(TYPES)}, got '{qtype}'")
    folder = resolve_source(source)
    cfg, fmt = read_config(folder)
    st = SafeTensors(folder)
    layers = read_head(st, fmt, cfg["hidden_size"], folder)
    fields = render_template(fmt, cfg.get("architectures") or [], folder)
    prefix = _backbone_prefix(st, folder)
    print_ = fingerprint((folder / "config.json").read_bytes(), layers, st.raw(prefix + "embed_tokens.weight"))
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    gguf_path, head_path = out / "model.gguf", out / "head.npz"
    name = source.rstrip("/").rsplit("/", 1)[-1]
    write_gguf(gguf_path, folder, cfg, st, qtype, print_, name)
    arrays = {"kind": np.array(fmt), "fingerprint": np.array(print_)}
    for i, (w, b) in enumerate(layers):
        arrays[f"w{i}"], arrays[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
    np.savez(head_path, **arrays)
    prm = {
        "model": str(gguf_path.resolve()),
        "head": str(head_path.resolve()),
        "fingerprint": print_,
        "format": fmt,
        **fields,
        "aggregation": "last",
    }
    fragment = out / "prm.yaml"
    header = f"# ttc prm import {source} --type {qtype}: {fmt} PRM ({len(layers)}-layer head)\n"
    # JSON strings are YAML double-quoted scalars: "\n" stays readable on one line
    body = "".join(f"  {k}: {json.dumps(v, ensure_ascii=False)}\n" for k, v in prm.items())
    fragment.write_text(header + "prm:\n" + body, encoding="utf-8")
    return fragment
