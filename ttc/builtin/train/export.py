"""Export a trained torch model to GGUF (through `ttc.builtin.gguf_llama`) and read a GGUF back into torch.

Reading back lets the PRM recipe sample from the shipped policy file itself, and lets tests compare the
GGUF's llama.cpp logits with the torch model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..gguf_llama import GGUFSpec, LlamaShape, tensor_shapes, write_llama_gguf
from .common import load_checkpoint
from .formats import VOCAB
from .model import Llama


def export_gguf(model: Llama, path: str | Path, name: str, matrix_dtype: str = "f32") -> Path:
    """Write `model` as a llama GGUF with the byte vocabulary (BOS added by default)."""
    spec = GGUFSpec(name=name, vocab=VOCAB, add_bos=True, matrix_dtype=matrix_dtype)
    return write_llama_gguf(path, model.shape, model.gguf_tensors(), spec)


def _field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]].tolist()[0]


def _float32_field(reader, key) -> float:
    """A float32 field as the shortest decimal that is the same float32: the value `export_gguf` was given
    (1e-5 is stored as 9.99999975e-06), so a shape read back equals the shape written."""
    return float(str(np.float32(_field(reader, key))))


def read_gguf(path: str | Path) -> tuple[LlamaShape, dict[str, np.ndarray]]:
    """Shape and float32 (out, in) tensors of a llama GGUF written by `export_gguf`."""
    import gguf

    r = gguf.GGUFReader(str(path))
    shape = LlamaShape(
        n_vocab=len(r.fields["tokenizer.ggml.tokens"].data),
        n_embd=_field(r, "llama.embedding_length"),
        n_layer=_field(r, "llama.block_count"),
        n_head=_field(r, "llama.attention.head_count"),
        n_head_kv=_field(r, "llama.attention.head_count_kv"),
        n_ff=_field(r, "llama.feed_forward_length"),
        n_ctx=_field(r, "llama.context_length"),
        rope_base=_float32_field(r, "llama.rope.freq_base"),
        rms_eps=_float32_field(r, "llama.attention.layer_norm_rms_epsilon"),
    )
    expected = tensor_shapes(shape)
    tensors = {}
    for t in r.tensors:
        arr = np.array(t.data, dtype=np.float32).reshape(expected[t.name])
        tensors[t.name] = arr
    return shape, tensors


def load_gguf_model(path: str | Path) -> Llama:
    """A torch `Llama` holding the weights of a GGUF file."""
    shape, tensors = read_gguf(path)
    model = Llama(shape)
    model.load_gguf_tensors(tensors)
    model.eval()
    return model


def load_weights(path: str | Path) -> Llama:
    """A torch `Llama` from a training checkpoint (.pt) or an exported GGUF (.gguf)."""
    return load_gguf_model(path) if str(path).endswith(".gguf") else load_checkpoint(path)[0]
