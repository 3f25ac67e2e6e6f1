"""A Hugging Face checkpoint's tokenizer as GGUF metadata: byte-level BPE (Qwen2's, Llama 3's), for `ttc prm import`.

Read from the checkpoint's own tokenizer.json and tokenizer_config.json (no transformers needed):
tokenizer.ggml.model gpt2 with the pre-tokenizer type whose regex the checkpoint's pre-tokenizer splits on
(qwen2, or llama-bpe for Llama 3's; llama.cpp then splits text with that same regex; qwen2 whenever the
tokenizer class is Qwen2Tokenizer, whose transformers 5 class ignores tokenizer.json's), the tokens by id
(ids the embedding has but the tokenizer lacks are filled as unused `[PADn]`), token types (special added
tokens CONTROL, other added tokens USER_DEFINED), the merges, the special token ids and the chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPLIT = (  # Llama 3's: digits in runs of up to three
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TYPES = {QWEN2_SPLIT: "qwen2", LLAMA3_SPLIT: "llama-bpe"}  # the split regex -> llama.cpp's pre-tokenizer type
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5  # gguf.TokenType values


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    special: dict[str, int] = field(default_factory=dict)  # bos / eos / pad -> id
    text: dict[str, str] = field(default_factory=dict)  # bos / eos / pad -> its text
    add_bos: bool = False
    pre: str = "qwen2"  # llama.cpp's pre-tokenizer type
    chat_template: str | None = None

    def id_of(self, text: str) -> int | None:
        try:
            return self.tokens.index(text)
        except ValueError:
            return None


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _pre_type(pre, where: str) -> str:
    """llama.cpp's pre-tokenizer type for this one; refuse one that no llama.cpp pre-type would reproduce."""
    parts = pre.get("pretokenizers", [pre]) if isinstance(pre, dict) else []
    splits = [p for p in parts if p.get("type") == "Split"]
    byte_level = [p for p in parts if p.get("type") == "ByteLevel"]
    pattern = splits[0].get("pattern", {}).get("Regex") if len(splits) == 1 else None
    if pattern not in PRE_TYPES or len(byte_level) != 1 or byte_level[0].get("use_regex", True):
        raise UsageError(
            f"{where}: the pre-tokenizer is not Qwen2's or Llama 3's (a Split on their regex, then ByteLevel); "
            "only those byte-level BPE tokenizers can be imported"
        )
    return PRE_TYPES[pattern]


def read_vocab(folder: Path, n_vocab: int) -> Vocab:
    """The tokenizer of checkpoint `folder` for an embedding of `n_vocab` rows."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise UsageError(f"{folder}: no tokenizer.json (the checkpoint's tokenizer is needed for the GGUF)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not readable JSON ({e})") from None
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise UsageError(f"{path}: model type {model.get('type')!r} is not BPE; only byte-level BPE is supported")
    cfg_path = folder / "tokenizer_config.json"
    cfg = {}
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise UsageError(f"{cfg_path}: not readable JSON ({e})") from None
    # transformers 5's Qwen2Tokenizer builds its own pre-tokenizer (Qwen2's regex) from the vocabulary and
    # merges, whatever tokenizer.json's says; other classes read tokenizer.json's as it is
    qwen_class = cfg.get("tokenizer_class") in ("Qwen2Tokenizer", "Qwen2TokenizerFast")
    pre = "qwen2" if qwen_class else _pre_type(data.get("pre_tokenizer"), str(path))
    tokens: list[str | None] = [None] * n_vocab
    types = [UNUSED] * n_vocab
    for text, i in model["vocab"].items():
        if i >= n_vocab:
            raise UsageError(f"{path}: token {text!r} has id {i}, past the embedding's {n_vocab} rows")
        tokens[i], types[i] = text, NORMAL
    for added in data.get("added_tokens", []):
        i = added["id"]
        if i >= n_vocab:
            raise UsageError(f"{path}: added token {added['content']!r} has id {i}, past the embedding's rows")
        tokens[i], types[i] = added["content"], CONTROL if added.get("special") else USER_DEFINED
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = f"[PAD{i}]"
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if not merges:
        raise UsageError(f"{path}: the BPE has no merges")
    vocab = Vocab(tokens=tokens, types=types, merges=merges, pre=pre)
    for kind in ("bos", "eos", "pad"):
        text = _token_text(cfg.get(f"{kind}_token"))
        i = vocab.id_of(text) if text else None
        if i is not None:
            vocab.special[kind], vocab.text[kind] = i, text
    vocab.add_bos = bool(cfg.get("add_bos_token", False))
    template = cfg.get("chat_template")
    vocab.chat_template = template if isinstance(template, str) else None
    return vocab


def write_vocab(writer, vocab: Vocab) -> None:
    """Put `vocab` into a gguf.GGUFWriter."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id, "pad": writer.add_pad_token_id}
    for kind, i in vocab.special.items():
        adders[kind](i)
    writer.add_add_bos_token(vocab.add_bos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
