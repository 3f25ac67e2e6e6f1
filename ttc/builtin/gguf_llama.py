"""Write small llama-architecture GGUF files with a byte-level tokenizer.

Two users: the tests, which write tiny random-weight models and load them through llama.cpp, and the
training recipe of the built-in model pair (`ttc.train`), which exports trained weights. Both need the
same tokenizer, so it is defined here once as `ByteVocab`:

    ids 0..255   one token per byte (GPT-2 byte-to-unicode text, so llama.cpp's BPE decodes them)
    256          <s>   BOS (control)
    257          </s>  EOS (control)
    258          the one BPE merge llama.cpp needs to accept a gpt2 vocabulary (bytes 0xFE 0xFF, which
                 never occur in valid UTF-8, so the merge never fires and text is tokenized byte by byte)
    259..        user-defined tokens (e.g. the Math-Shepherd step tag "ки"), matched before BPE

Weights follow llama.cpp's conventions: arrays are (out, in), RoPE rotates adjacent pairs of dimensions
(train with that convention, or permute q/k before writing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


BYTE_TO_UNICODE = _bytes_to_unicode()
BOS_ID, EOS_ID, MERGE_ID = 256, 257, 258


@dataclass
class ByteVocab:
    """The byte-level vocabulary shared by every model ttc writes; `user_tokens` get ids from 259 on."""

    user_tokens: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return 259 + len(self.user_tokens)

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    def user_token_id(self, text: str) -> int:
        return 259 + self.user_tokens.index(text)

    def token_texts(self) -> list[str]:
        merged = BYTE_TO_UNICODE[0xFE] + BYTE_TO_UNICODE[0xFF]
        return [BYTE_TO_UNICODE[b] for b in range(256)] + ["<s>", "</s>", merged, *self.user_tokens]

    def token_types(self) -> list[int]:
        # gguf.TokenType: NORMAL=1, CONTROL=3, USER_DEFINED=4
        return [1] * 256 + [3, 3, 1] + [4] * len(self.user_tokens)

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids exactly as llama.cpp tokenizes `text` with this vocabulary (parse_special=False)."""
        ids = [BOS_ID] if add_bos else []
        rest = text
        by_length = sorted(self.user_tokens, key=len, reverse=True)
        while rest:
            cut = [(rest.find(t), t) for t in by_length if t and rest.find(t) >= 0]
            if not cut:
                ids.extend(rest.encode("utf-8"))
                break
            pos, tok = min(cut, key=lambda c: (c[0], -len(c[1])))
            ids.extend(rest[:pos].encode("utf-8"))
            ids.append(self.user_token_id(tok))
            rest = rest[pos + len(tok) :]
        return ids

    def decode(self, ids: list[int]) -> str:
        out = bytearray()
        for i in ids:
            if i < 256:
                out.append(i)
            elif i >= 259:
                out.extend(self.user_tokens[i - 259].encode("utf-8"))
            elif i == MERGE_ID:
                out.extend(b"\xfe\xff")
        return out.decode("utf-8", errors="replace")


@dataclass
class LlamaShape:
    """Hyperparameters of a llama-architecture model (the GGUF `llama.*` keys)."""

    n_vocab: int
    n_embd: int = 64  # model width
    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads; head dim = n_embd // n_head
    n_head_kv: int = 4  # key/value heads (grouped-query attention when < n_head)
    n_ff: int = 172  # feed-forward hidden width (SwiGLU)
    n_ctx: int = 2048  # training context length
    rope_base: float = 10000.0
    rms_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def n_params(self) -> int:
        d, f, kv = self.n_embd, self.n_ff, self.n_head_kv * self.head_dim
        per_layer = 2 * d + d * d * 2 + 2 * d * kv + 3 * d * f
        return 2 * self.n_vocab * d + d + self.n_layer * per_layer


def tensor_shapes(shape: LlamaShape) -> dict[str, tuple[int, ...]]:
    """Every tensor a llama GGUF needs, with its (out, in) shape."""
    d, f, kv = shape.n_embd, shape.n_ff, shape.n_head_kv * shape.head_dim
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (shape.n_vocab, d)}
    for i in range(shape.n_layer):
        b = f"blk.{i}."
        shapes.update(
            {
                b + "attn_norm.weight": (d,),
                b + "attn_q.weight": (d, d),
                b + "attn_k.weight": (kv, d),
                b + "attn_v.weight": (kv, d),
                b + "attn_output.weight": (d, d),
                b + "ffn_norm.weight": (d,),
                b + "ffn_gate.weight": (f, d),
                b + "ffn_up.weight": (f, d),
                b + "ffn_down.weight": (d, f),
            }
        )
    shapes["output_norm.weight"] = (d,)
    shapes["output.weight"] = (shape.n_vocab, d)
    return shapes


def random_llama_tensors(shape: LlamaShape, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Random weights; `scale` > 1 sharpens the output distribution (fewer near-ties under greedy)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shp in tensor_shapes(shape).items():
        if len(shp) == 1:
            out[name] = np.ones(shp, dtype=np.float32)
        else:
            std = scale / np.sqrt(shp[1])
            out[name] = (rng.standard_normal(shp) * std).astype(np.float32)
    return out


@dataclass
class GGUFSpec:
    """Everything besides weights that goes into the file."""

    name: str = "ttc-tiny"
    vocab: ByteVocab = field(default_factory=ByteVocab)
    chat_template: str | None = None
    add_bos: bool = True
    matrix_dtype: str = "f16"  # "f16" or "f32" for 2-D weights; norms are always f32
    split_max_tensors: int = 0  # > 0: a split model, parts of at most this many tensors (NAME-0000K-of-0000N.gguf)


def write_llama_gguf(path: str | Path, shape: LlamaShape, tensors: dict[str, np.ndarray], spec: GGUFSpec) -> Path:
    """Write a llama-architecture GGUF at `path`; `tensors` maps GGUF tensor names to (out, in) arrays."""
    import gguf

    path = Path(path)
    expected = tensor_shapes(shape)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"missing tensors: {', '.join(missing[:5])}")
    if shape.n_vocab != spec.vocab.size:
        raise ValueError(f"shape.n_vocab={shape.n_vocab} but the vocabulary has {spec.vocab.size} tokens")
    w = gguf.GGUFWriter(str(path), "llama", split_max_tensors=spec.split_max_tensors)
    w.add_name(spec.name)
    w.add_context_length(int(shape.n_ctx))
    w.add_embedding_length(int(shape.n_embd))
    w.add_block_count(int(shape.n_layer))
    w.add_feed_forward_length(int(shape.n_ff))
    w.add_head_count(int(shape.n_head))
    w.add_head_count_kv(int(shape.n_head_kv))
    w.add_layer_norm_rms_eps(float(shape.rms_eps))
    w.add_rope_dimension_count(int(shape.head_dim))
    w.add_rope_freq_base(float(shape.rope_base))
    f16 = spec.matrix_dtype == "f16"
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(spec.vocab.token_texts())
    w.add_token_types(spec.vocab.token_types())
    w.add_token_merges([BYTE_TO_UNICODE[0xFE] + " " + BYTE_TO_UNICODE[0xFF]])
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_add_bos_token(bool(spec.add_bos))
    w.add_add_eos_token(False)
    if spec.chat_template:
        w.add_chat_template(spec.chat_template)
    for name, shp in expected.items():
        arr = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if arr.shape != shp:
            raise ValueError(f"tensor {name} has shape {arr.shape}, expected {shp}")
        if f16 and arr.ndim == 2:
            arr = arr.astype(np.float16)
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return w.format_shard_names(path)[0]  # `path` itself unless split: then its first part
