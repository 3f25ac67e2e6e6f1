"""`ttc prm import`: a Hugging Face PRM checkpoint with a reward head, as a GGUF backbone plus the head.

Backbones qwen2, qwen3 and llama (config.json read as transformers reads it: ttc.prm.hf_config); the head found
by its tensor names, with the architecture naming its class ({Qwen2,Qwen3,Llama} + one of):
  ForPrmModel (Skywork-o1-Open-PRM)             v_head.summary = Linear(h, 1)          -> value-head
  ForProcessRewardModel (Qwen2.5-Math-PRM)      score.0 Linear(h, h), ReLU, score.2 (2) -> classifier-head
  ForTokenClassification (H4's PRM-0.2)         score = Linear(h, 2)                   -> classifier-head

Written into the output folder:
  model.gguf   the backbone (architecture qwen2, qwen3 or llama, tensors and keys as llama.cpp's loader for it
               reads them: llama's q/k rows permuted to llama.cpp's rotary pairing, qwen3's q/k norms, the
               rotary base and scaling keys, llama3 scaling as a rope_freqs tensor; 2-D weights in the chosen
               type, norms and biases f32) with the checkpoint's tokenizer
  head.npz     the head, float32: kind, layers w0, b0 (, w1, b1) as (out, in) and (out,), fingerprint
  prm.yaml     a preset fragment (a `prm:` section) naming both, with the scoring format
Nothing is written unless the config and every tensor's shape check out first. The fingerprint (sha256 of
config.json, the head and the token embedding) is stored in both the GGUF (`ttc.prm.fingerprint`) and
head.npz, so a head is never applied to a backbone it was not trained with. Weights are read from
*.safetensors (one file or shards) with numpy (F32, F16, BF16), one tensor at a time.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import TTCRuntimeError, UsageError
from .hf_config import Backbone, read_backbone
from .hf_vocab import read_vocab, write_vocab

TYPES = ("f16", "f32", "q8_0")
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
FINGERPRINT_KEY = "ttc.prm.fingerprint"
_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


class SafeTensors:
    """The tensors of a checkpoint's *.safetensors files, read on demand with numpy."""

    def __init__(self, folder: Path):
        self.index: dict[str, tuple[Path, str, tuple[int, ...], int, int]] = {}
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            found = "pytorch_model.bin only" if (folder / "pytorch_model.bin").exists() else "none"
            raise UsageError(f"{folder}: no *.safetensors weights (found {found}); save the checkpoint as safetensors")
        index = folder / "model.safetensors.index.json"
        if index.is_file():  # shards: take the files the index names, and every one must be there
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (ValueError, KeyError, AttributeError) as e:
                raise UsageError(f"{index}: not a safetensors index ({type(e).__name__}: {e})") from None
            missing = [name for name in shards if not (folder / name).is_file()]
            if missing:
                raise UsageError(f"{index}: shard {missing[0]} is missing ({len(missing)} of {len(shards)})")
            files = [folder / name for name in shards]
        for f in files:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
            for name, t in header.items():
                if name != "__metadata__":
                    a, b = t["data_offsets"]
                    self.index[name] = (f, t["dtype"], tuple(t["shape"]), 8 + n + a, b - a)

    def dtypes(self) -> list[str]:
        return sorted({t for _, t, *_ in self.index.values()})

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


def read_config(folder: Path) -> Backbone:
    """The checkpoint's config.json, read as transformers reads it."""
    path = folder / "config.json"
    if not path.is_file():
        raise UsageError(f"{folder}: no config.json (not a Hugging Face checkpoint folder)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UsageError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise UsageError(f"{path}: not a JSON object")
    return read_backbone(cfg, path)


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
    raise UsageError(f"{where}: no embed_tokens.weight among the weights (not a {', '.join(BACKBONE_NAMES)} backbone)")


BACKBONE_NAMES = ("qwen2", "qwen3", "llama")


def _permute_rotary(a: np.ndarray, n_head: int) -> np.ndarray:
    """HF's llama rotates the two halves of each head (i, i + d/2); llama.cpp's llama rotates adjacent pairs
    (2i, 2i + 1): reorder each head's rows (or bias entries) so that pair j sits at rows 2j, 2j + 1."""
    d = a.shape[0] // n_head
    return a.reshape(n_head, 2, d // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def plan_tensors(bb: Backbone, st: SafeTensors, where: Path) -> list[tuple[str, str, Callable | None]]:
    """(GGUF name, checkpoint name, transform) for every backbone tensor, each checked against the shape the
    config gives it; tensors the config does not use (a bias it says is absent) are left out, as transformers
    leaves them."""
    prefix = _backbone_prefix(st, where)
    h, d, q, kv, f = bb.hidden, bb.head_dim, bb.n_head * bb.head_dim, bb.n_kv * bb.head_dim, bb.ffn
    layer = {  # HF name -> (GGUF name after "blk.N.", shape)
        "input_layernorm.weight": ("attn_norm.weight", (h,)),
        "self_attn.q_proj.weight": ("attn_q.weight", (q, h)),
        "self_attn.k_proj.weight": ("attn_k.weight", (kv, h)),
        "self_attn.v_proj.weight": ("attn_v.weight", (kv, h)),
        "self_attn.o_proj.weight": ("attn_output.weight", (h, q)),
        "post_attention_layernorm.weight": ("ffn_norm.weight", (h,)),
        "mlp.gate_proj.weight": ("ffn_gate.weight", (f, h)),
        "mlp.up_proj.weight": ("ffn_up.weight", (f, h)),
        "mlp.down_proj.weight": ("ffn_down.weight", (h, f)),
    }
    if bb.attn_bias:
        layer["self_attn.q_proj.bias"] = ("attn_q.bias", (q,))
        layer["self_attn.k_proj.bias"] = ("attn_k.bias", (kv,))
        layer["self_attn.v_proj.bias"] = ("attn_v.bias", (kv,))
    if bb.out_bias:
        layer["self_attn.o_proj.bias"] = ("attn_output.bias", (h,))
    if bb.mlp_bias:
        layer.update(
            {f"mlp.{n}_proj.bias": (f"ffn_{n}.bias", (h if n == "down" else f,)) for n in ("gate", "up", "down")}
        )
    if bb.arch == "qwen3":
        layer["self_attn.q_norm.weight"] = ("attn_q_norm.weight", (d,))
        layer["self_attn.k_norm.weight"] = ("attn_k_norm.weight", (d,))
    plan = [("token_embd.weight", prefix + "embed_tokens.weight", (bb.vocab, h), None)]
    for i in range(bb.n_layer):
        for hf, (gg, shape) in layer.items():
            fix = None
            if bb.arch == "llama" and hf.startswith(("self_attn.q_proj", "self_attn.k_proj")):
                n = bb.n_head if "q_proj" in hf else bb.n_kv
                fix = lambda a, n=n: _permute_rotary(a, n)  # noqa: E731
            plan.append((f"blk.{i}.{gg}", f"{prefix}layers.{i}.{hf}", shape, fix))
    plan.append(("output_norm.weight", prefix + "norm.weight", (h,), None))
    if "lm_head.weight" in st and not bb.tie:
        plan.append(("output.weight", "lm_head.weight", (bb.vocab, h), None))
    for _, name, shape, _ in plan:
        if name not in st:
            raise UsageError(f"{where}: backbone tensor {name} is missing")
        if st.shape(name) != shape:
            raise UsageError(f"{where}: backbone tensor {name} has shape {st.shape(name)}, the config gives {shape}")
    return [(gg, name, fix) for gg, name, _, fix in plan]


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


def write_gguf(path: Path, bb: Backbone, st: SafeTensors, plan, vocab, qtype: str, print_: str, name: str) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), bb.arch)
    w.add_name(name)
    w.add_context_length(bb.context)
    w.add_embedding_length(bb.hidden)
    w.add_block_count(bb.n_layer)
    w.add_feed_forward_length(bb.ffn)
    w.add_head_count(bb.n_head)
    w.add_head_count_kv(bb.n_kv)
    w.add_key_length(bb.head_dim)
    w.add_value_length(bb.head_dim)
    w.add_rope_dimension_count(bb.head_dim)
    w.add_rope_freq_base(bb.rope.theta)
    rope = bb.rope
    if rope.kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope.factor)
    elif rope.kind == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rope.factor)
        w.add_rope_scaling_orig_ctx_len(rope.original_context)
        # llama.cpp scales cos/sin by its own 0.1 ln(factor) + 1 and then by this: together transformers' factor
        w.add_rope_scaling_attn_factors(rope.attention_factor / rope.yarn_mscale())
    w.add_layer_norm_rms_eps(bb.eps)
    w.add_file_type({"f32": 0, "f16": 1, "q8_0": 7}[qtype])
    w.add_string(FINGERPRINT_KEY, print_)
    write_vocab(w, vocab)
    if rope.kind == "llama3":
        w.add_tensor("rope_freqs.weight", np.array(rope.llama3_divisors(bb.head_dim), np.float32))
    for gg, hf, fix in plan:
        a = st.get(hf)
        _add_weight(w, gg, fix(a) if fix else a, qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def render_template(fmt: str, architecture: str, folder: Path) -> dict:
    """The prm: fields that say how this PRM reads a solution (its template, step tag)."""
    vocab_cfg = {}
    if (folder / "tokenizer_config.json").is_file():
        vocab_cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    if fmt == "value-head":  # Skywork: BOS + problem + "\n", each step followed by the step token "\n"
        bos = _text(vocab_cfg.get("bos_token")) or ""
        return {"template": bos + "{problem}\n", "step_tag": "\n", "step_separator": ""}
    if architecture.endswith("ForTokenClassification"):  # H4: steps separated by a blank line
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


def import_checkpoint(
    source: str, out: str | Path, qtype: str = "f16", report: Callable[[str], None] | None = None
) -> Path:
    """Import checkpoint `source` into folder `out`; return the path of the preset fragment written. `report`
    gets one line saying what was read (backbone, sizes, rotary embedding, dtype, head)."""
    import jinja2.sandbox  # noqa: F401 - render_template's, imported here so a missing jinja2 fails early

    if qtype not in TYPES:
        raise UsageError(f"--type must be one of {', '.join(TYPES)}, got '{qtype}'")
    folder = resolve_source(source)
    bb = read_config(folder)
    st = SafeTensors(folder)
    layers = read_head(st, bb.head, bb.hidden, folder)
    plan = plan_tensors(bb, st, folder)
    vocab = read_vocab(folder, bb.vocab)
    fields = render_template(bb.head, bb.architecture, folder)
    print_ = fingerprint((folder / "config.json").read_bytes(), layers, st.raw(plan[0][1]))
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    gguf_path, head_path, fragment = out / "model.gguf", out / "head.npz", out / "prm.yaml"
    name = source.rstrip("/").rsplit("/", 1)[-1]
    try:
        write_gguf(gguf_path, bb, st, plan, vocab, qtype, print_, name)
        arrays = {"kind": np.array(bb.head), "fingerprint": np.array(print_)}
        for i, (w, b) in enumerate(layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        np.savez(head_path, **arrays)
    except BaseException:  # a tensor that fails to read half-way: leave no GGUF that looks whole
        gguf_path.unlink(missing_ok=True)
        head_path.unlink(missing_ok=True)
        raise
    prm = {
        "model": str(gguf_path.resolve()),
        "head": str(head_path.resolve()),
        "fingerprint": print_,
        "format": bb.head,
        **fields,
        "aggregation": "last",
    }
    shards = len({f for f, *_ in st.index.values()})
    line = f"{bb.describe()} ({len(layers)}-layer head); weights {'/'.join(st.dtypes())} in {shards} file(s)"
    header = f"# ttc prm import {source} --type {qtype}\n# {line}\n"
    # JSON strings are YAML double-quoted scalars: "\n" stays readable on one line
    body = "".join(f"  {k}: {json.dumps(v, ensure_ascii=False)}\n" for k, v in prm.items())
    fragment.write_text(header + "prm:\n" + body, encoding="utf-8")
    if report:
        report(f"imported {line} -> {qtype} GGUF")
    return fragment
