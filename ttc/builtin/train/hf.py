"""The built-in models in Hugging Face format, for servers that load that (vLLM, SGLang, transformers):
`python -m ttc.train export-hf --policy GGUF --out DIR`.

    DIR/config.json            LlamaForCausalLM with the GGUF's shape (float32)
    DIR/model.safetensors      the GGUF's tensors under transformers' names; q and k un-permuted, since
                               llama.cpp rotates adjacent pairs of dimensions and transformers rotates halves
    DIR/tokenizer.json         the byte vocabulary (ttc.builtin.gguf_llama.ByteVocab) as a byte-level BPE with
                               its one dummy merge, <s>/</s> as special tokens (never matched in text:
                               `split_special_tokens`), the user tokens (the step tag "ки") matched before BPE,
                               and <s> added in front, as the GGUF does
    DIR/tokenizer_config.json, DIR/generation_config.json

The export is deterministic and takes well under a second, so nothing of it is shipped: it is written from
the shipped GGUFs when needed. It needs the `train` extra (safetensors, tokenizers; torch is not used).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..gguf_llama import BOS_ID, BYTE_TO_UNICODE, EOS_ID, ByteVocab, LlamaShape
from .export import read_gguf
from .formats import VOCAB

_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (pairs of adjacent dimensions per head) back to transformers' (two halves):
    the inverse of the permutation llama.cpp's converter applies to Hugging Face q_proj and k_proj."""
    out = w.shape[0]
    return w.reshape(n_head, out // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_tensors(shape: LlamaShape, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GGUF tensor names and layouts -> transformers' LlamaForCausalLM state dict (both are (out, in))."""
    out = {"model.embed_tokens.weight": tensors["token_embd.weight"]}
    for name, arr in tensors.items():
        if not name.startswith("blk."):
            continue
        _, i, kind, _ = name.split(".")
        if kind == "attn_q":
            arr = unpermute(arr, shape.n_head)
        elif kind == "attn_k":
            arr = unpermute(arr, shape.n_head_kv)
        out[f"model.layers.{i}.{_LAYER[kind]}.weight"] = arr
    out["model.norm.weight"] = tensors["output_norm.weight"]
    out["lm_head.weight"] = tensors["output.weight"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def hf_config(shape: LlamaShape) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": shape.n_vocab,
        "hidden_size": shape.n_embd,
        "intermediate_size": shape.n_ff,
        "num_hidden_layers": shape.n_layer,
        "num_attention_heads": shape.n_head,
        "num_key_value_heads": shape.n_head_kv,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": shape.n_ctx,
        "rms_norm_eps": shape.rms_eps,
        "rope_theta": shape.rope_base,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "torch_dtype": "float32",
    }


def byte_tokenizer(vocab: ByteVocab = VOCAB):
    """A `tokenizers.Tokenizer` that gives the ids llama.cpp gives with this vocabulary (BOS in front)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    texts = vocab.token_texts()
    bpe_vocab = {t: i for i, t in enumerate(texts[:BOS_ID])}
    merged = texts[258]
    bpe_vocab.update({"<s>": BOS_ID, "</s>": EOS_ID, merged: 258})
    tok = Tokenizer(models.BPE(vocab=bpe_vocab, merges=[(BYTE_TO_UNICODE[0xFE], BYTE_TO_UNICODE[0xFF])]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<s>", special=True), AddedToken("</s>", special=True)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in vocab.user_tokens])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS_ID)]
    )
    for t in vocab.user_tokens:
        assert tok.token_to_id(t) == vocab.user_token_id(t), t
    return tok


def export_hf(gguf_path: str | Path, out: str | Path) -> Path:
    """Write the GGUF `gguf_path` (a built-in model's layout) as a Hugging Face folder `out`."""
    from safetensors.numpy import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shape, tensors = read_gguf(gguf_path)
    if shape.n_vocab != VOCAB.size:
        raise ValueError(f"{gguf_path}: {shape.n_vocab} tokens, not the built-in byte vocabulary's {VOCAB.size}")
    save_file(hf_tensors(shape, tensors), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(shape), indent=1) + "\n")
    byte_tokenizer().save(str(out / "tokenizer.json"))
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "add_bos_token": True,
        "model_max_length": shape.n_ctx,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": True,  # "<s>" written in a prompt is text, as llama.cpp reads it (no special parse)
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1) + "\n")
    gen = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "do_sample": False}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=1) + "\n")
    return out
