"""A Hugging Face PRM checkpoint's config.json read as transformers (5.x) reads it, for `ttc prm import`.

Backbones: qwen2, qwen3 (q/k RMS norms) and llama. Every field that changes the forward pass is read the way
the backbone's transformers config and model classes read it, with their defaults where it is absent:
  sizes          hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads (null: one per
                 attention head), head_dim (qwen3 default 128; otherwise hidden_size / num_attention_heads),
                 intermediate_size, vocab_size, rms_norm_eps, hidden_act (silu only)
  rotary         `rope_scaling` (the older layout, which wins when set, as in transformers), else
                 `rope_parameters` (the current one, possibly nested by layer type); its `rope_theta`, else the
                 top-level `rope_theta`, else 10000; types default, linear, yarn, and llama3 on llama (what
                 llama.cpp runs through its GGUF keys and rope_freqs tensor; yarn with the default betas, the
                 only ones llama.cpp's loaders for these take); partial rotary only at 1.0
  biases         qwen2: q/k/v always; llama: `attention_bias` (q/k/v/o) and `mlp_bias`; qwen3: `attention_bias`
                 refused (llama.cpp's qwen3 loads no o_proj bias)
  attention      sliding windows (qwen2, qwen3: `use_sliding_window` with `layer_types`/`max_window_layers`):
                 refused where a layer would use one, since llama.cpp's graphs for these have none
  weights        `dtype` (or the older `torch_dtype`), `tie_word_embeddings`; `quantization_config` refused
Any other field is an error naming it, unless it is in HARMLESS (one list: fields that never change the hidden
states, such as token ids, generation settings and bookkeeping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

BACKBONES = {"qwen2": "Qwen2", "qwen3": "Qwen3", "llama": "Llama"}  # model_type -> class-name prefix
HEAD_CLASSES = {  # architecture suffix -> head format
    "ForPrmModel": "value-head",  # Skywork-o1-Open-PRM: v_head.summary = Linear(h, 1)
    "ForProcessRewardModel": "classifier-head",  # Qwen2.5-Math-PRM: score.0 Linear(h, h), ReLU, score.2 (2)
    "ForTokenClassification": "classifier-head",  # H4's PRMs: score = Linear(h, 2)
}
# The transformers config classes' defaults (Qwen2Config, Qwen3Config, LlamaConfig in 5.x); a test holds
# them equal to the installed transformers'.
DEFAULTS = {
    "qwen2": {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu",
              "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
              "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28},
    "qwen3": {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128, "hidden_act": "silu",
              "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
              "attention_bias": False, "use_sliding_window": False, "sliding_window": 4096,
              "max_window_layers": 28},
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": None, "head_dim": None, "hidden_act": "silu",
              "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
              "attention_bias": False, "mlp_bias": False},
}  # fmt: skip
DEFAULT_THETA = 10000.0
ROPE_FIELDS = {"rope_parameters", "rope_scaling", "rope_theta", "partial_rotary_factor",
               "original_max_position_embeddings"}  # fmt: skip
DTYPE_FIELDS = {"dtype", "torch_dtype", "quantization_config"}
# Fields that never change a hidden state: what the head or the tokenizer reads (token ids, labels), generation
# settings, bookkeeping, training-only settings (dropout in eval, initialisation) and attributes transformers 5
# keeps but its Qwen2, Qwen3 and Llama models do not read (pretraining_tp, chunk_size_feed_forward, ...).
HARMLESS = frozenset(
    """architectures model_type transformers_version _name_or_path name_or_path auto_map _commit_hash
    bos_token_id eos_token_id pad_token_id sep_token_id decoder_start_token_id tokenizer_class
    id2label label2id num_labels problem_type finetuning_task task_specific_params prefix
    use_cache initializer_range attention_dropout pretraining_tp
    output_attentions output_hidden_states return_dict torchscript use_bfloat16 tf_legacy_loss pruned_heads
    chunk_size_feed_forward is_encoder_decoder is_decoder add_cross_attention cross_attention_hidden_size
    tie_encoder_decoder attn_implementation _attn_implementation _attn_implementation_internal
    _attn_implementation_autoset experts_implementation _experts_implementation
    assistant_confidence_threshold assistant_lookbehind bad_words_ids begin_suppress_tokens diversity_penalty
    do_sample early_stopping encoder_no_repeat_ngram_size encoder_repetition_penalty epsilon_cutoff eta_cutoff
    exponential_decay_length_penalty forced_bos_token_id forced_eos_token_id length_penalty max_length
    min_length no_repeat_ngram_size num_assistant_tokens num_assistant_tokens_schedule num_beam_groups num_beams
    num_return_sequences output_scores remove_invalid_values repetition_penalty return_dict_in_generate
    suppress_tokens target_lookbehind temperature top_k top_p typical_p""".split()
)
_ROPE_KEYS = {  # rope type -> the keys its parameters may have (besides rope_type / type / rope_theta)
    "default": set(),
    "linear": {"factor"},
    "yarn": {"factor", "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate",
             "original_max_position_embeddings"},
    "llama3": {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"},
}  # fmt: skip
_DTYPES = {"float32", "float16", "bfloat16"}


@dataclass
class Rope:
    """The rotary embedding as transformers computes it, in the terms llama.cpp's GGUF keys take."""

    theta: float
    kind: str = "default"  # default / linear / yarn / llama3
    factor: float = 1.0
    original_context: int = 0  # yarn, llama3
    attention_factor: float = 1.0  # yarn: the cos/sin magnitude transformers applies
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0

    def describe(self) -> str:
        base = f"rotary base {self.theta:g}"
        if self.kind == "default":
            return base + " (no scaling)"
        if self.kind == "linear":
            return base + f" (linear scaling x{self.factor:g})"
        return base + f" ({self.kind} scaling x{self.factor:g} from {self.original_context})"

    def yarn_mscale(self) -> float:
        """llama.cpp's own yarn magnitude, 0.1 ln(factor) + 1 (1 for factors up to 1)."""
        return 1.0 if self.factor <= 1 else 0.1 * math.log(self.factor) + 1.0

    def llama3_divisors(self, head_dim: int) -> list[float]:
        """Per rotary pair, what llama.cpp's rope_freqs divides the base frequency by (transformers' llama3)."""
        out = []
        low_wavelen = self.original_context / self.low_freq_factor
        high_wavelen = self.original_context / self.high_freq_factor
        for i in range(0, head_dim, 2):
            inv = 1.0 / self.theta ** (i / head_dim)
            wavelen = 2 * math.pi / inv
            if wavelen < high_wavelen:
                out.append(1.0)
            elif wavelen > low_wavelen:
                out.append(self.factor)
            else:
                smooth = (self.original_context / wavelen - self.low_freq_factor) / (
                    self.high_freq_factor - self.low_freq_factor
                )
                out.append(1.0 / ((1 - smooth) / self.factor + smooth))
        return out


@dataclass
class Backbone:
    """What config.json says about the backbone's forward pass."""

    arch: str  # qwen2 / qwen3 / llama
    architecture: str  # the config's class name, e.g. Qwen2ForPrmModel
    head: str  # value-head / classifier-head
    hidden: int
    n_layer: int
    n_head: int
    n_kv: int
    head_dim: int
    ffn: int
    vocab: int
    eps: float
    context: int
    rope: Rope
    attn_bias: bool  # q/k/v biases
    out_bias: bool  # o_proj bias
    mlp_bias: bool
    tie: bool
    dtype: str | None
    raw: dict = field(repr=False, default_factory=dict)

    def describe(self) -> str:
        dims = f"{self.n_head}/{self.n_kv} heads/kv heads of {self.head_dim}"
        return (
            f"{self.arch} backbone ({self.architecture}), {self.n_layer} layers, hidden {self.hidden}, {dims}, "
            f"{self.rope.describe()}, rms eps {self.eps:g}, dtype {self.dtype or 'unset'}, "
            f"{'tied' if self.tie else 'untied'} embeddings, {self.head}"
        )


def _int(cfg: dict, key: str, where: Path, default) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UsageError(f"{where}: '{key}' is {value!r}; expected a positive integer")
    return value


def _number(value, name: str, where: Path) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise UsageError(f"{where}: '{name}' is {value!r}; expected a number")
    return float(value)


def _architecture(cfg: dict, where: Path) -> tuple[str, str, str]:
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    supported = ", ".join(f"{p}{s}" for p in BACKBONES.values() for s in HEAD_CLASSES)
    if model_type not in BACKBONES:
        raise UsageError(
            f"{where}: model_type {model_type!r} ({', '.join(archs) or 'no architectures'}) is not supported; "
            f"supported backbones: {', '.join(BACKBONES)}"
        )
    prefix = BACKBONES[model_type]
    for a in archs if isinstance(archs, list) else []:
        if isinstance(a, str) and a.startswith(prefix) and a[len(prefix) :] in HEAD_CLASSES:
            return model_type, a, HEAD_CLASSES[a[len(prefix) :]]
    raise UsageError(f"{where}: architectures {archs!r} are not a supported reward head (supported: {supported})")


def _layer_types(cfg: dict, arch: str, n_layer: int, where: Path) -> list[str]:
    defaults = DEFAULTS[arch]
    use_window = cfg.get("use_sliding_window", defaults.get("use_sliding_window", False))
    window = cfg.get("sliding_window", defaults.get("sliding_window")) if use_window else None
    types = cfg.get("layer_types")
    if types is None:
        first = _int(cfg, "max_window_layers", where, defaults.get("max_window_layers", n_layer))
        types = ["sliding_attention" if window is not None and i >= first else "full_attention" for i in range(n_layer)]
    if not isinstance(types, list) or len(types) != n_layer:
        raise UsageError(f"{where}: 'layer_types' must list one type for each of the {n_layer} layers")
    for t in types:
        if t not in ("full_attention", "sliding_attention"):
            raise UsageError(f"{where}: 'layer_types' has {t!r}; known: full_attention, sliding_attention")
    sliding = [i for i, t in enumerate(types) if t == "sliding_attention"]
    if window is not None and sliding:
        raise UsageError(
            f"{where}: use_sliding_window is true, so layers {sliding[0]}-{sliding[-1]} attend within a window of "
            f"{window} tokens; llama.cpp's {arch} has no sliding-window attention (set use_sliding_window false "
            "only if the model was trained without it)"
        )
    return types


def read_rope(cfg: dict, arch: str, head_dim: int, context: int, layer_types: list[str], where: Path) -> Rope:
    """The rotary embedding, from either layout, as transformers' standardize_rope_params resolves it."""
    name = "rope_scaling" if cfg.get("rope_scaling") else "rope_parameters"
    params = cfg.get(name) or {}
    if not isinstance(params, dict):
        raise UsageError(f"{where}: '{name}' is {params!r}; expected an object")
    nested = [k for k in params if k in set(layer_types)]
    if nested:  # transformers' Qwen2/Qwen3 rotary embedding reads one flat set of parameters
        raise UsageError(f"{where}: '{name}' is nested by layer type ({', '.join(nested)}); {arch} reads one set")
    params = dict(params)
    type_key = f"{name}.{'rope_type' if 'rope_type' in params else 'type'}"
    kind = params.pop("rope_type", None) or params.pop("type", None) or "default"
    params.pop("type", None)
    theta = _number(params.pop("rope_theta", cfg.get("rope_theta", DEFAULT_THETA)), "rope_theta", where)
    partial = params.pop("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise UsageError(f"{where}: partial_rotary_factor {partial!r} is not supported ({arch} rotates whole heads)")
    allowed = _ROPE_KEYS.get(kind) if kind != "llama3" or arch == "llama" else None
    if allowed is None:
        known = "default, linear, yarn" + (", llama3" if arch == "llama" else "")
        raise UsageError(f"{where}: {type_key} {kind!r} is not supported for {arch} (supported: {known})")
    for key in params:
        if key not in allowed:
            raise UsageError(f"{where}: {name}.{key} is not a parameter of rope type {kind!r}")
    rope = Rope(theta=theta, kind=kind)
    if kind == "default":
        return rope
    if kind in ("yarn", "llama3"):  # a top-level original_max_position_embeddings wins, as in transformers
        orig = cfg.get("original_max_position_embeddings", params.get("original_max_position_embeddings", context))
        rope.original_context = int(_number(orig, "original_max_position_embeddings", where))
    factor = params.get("factor")
    if factor is None and kind == "yarn":
        factor = context / rope.original_context
    rope.factor = _number(factor, f"{name}.factor", where)
    if kind == "linear":
        return rope
    if kind == "llama3":
        for key in ("low_freq_factor", "high_freq_factor"):
            if key not in params:
                raise UsageError(f"{where}: {name}.{key} is missing (rope type llama3 needs it)")
            setattr(rope, key, _number(params[key], f"{name}.{key}", where))
        return rope
    if params.get("truncate", True) is not True:
        raise UsageError(f"{where}: {name}.truncate false is not supported (llama.cpp's yarn truncates)")
    for key, default in (("beta_fast", 32.0), ("beta_slow", 1.0)):  # llama.cpp reads no yarn beta key for these
        value = _number(params.get(key) or default, f"{name}.{key}", where)
        if value != default:
            raise UsageError(f"{where}: {name}.{key} {value:g} is not supported (llama.cpp's {arch} uses {default:g})")
    attention = params.get("attention_factor")
    mscale, mscale_all = params.get("mscale"), params.get("mscale_all_dim")

    def get_mscale(m: float) -> float:
        return 1.0 if rope.factor <= 1 else 0.1 * m * math.log(rope.factor) + 1.0

    if attention is None:
        attention = get_mscale(mscale) / get_mscale(mscale_all) if mscale and mscale_all else get_mscale(1.0)
    rope.attention_factor = _number(attention, f"{name}.attention_factor", where)
    return rope


def read_backbone(cfg: dict, where: Path) -> Backbone:
    """The backbone config.json `cfg` describes, or a UsageError naming the first field at fault."""
    arch, architecture, head = _architecture(cfg, where)
    d = DEFAULTS[arch]
    known = set(d) | ROPE_FIELDS | DTYPE_FIELDS | HARMLESS | {"layer_types", "head_dim"}
    for key in cfg:
        if key not in known:
            raise UsageError(
                f"{where}: field '{key}' is not one that ttc prm import knows for {arch} and it may change the "
                "forward pass; remove it if it does not"
            )
    if cfg.get("quantization_config"):
        raise UsageError(f"{where}: a quantized checkpoint (quantization_config); import the unquantized weights")
    hidden = _int(cfg, "hidden_size", where, d["hidden_size"])
    n_layer = _int(cfg, "num_hidden_layers", where, d["num_hidden_layers"])
    n_head = _int(cfg, "num_attention_heads", where, d["num_attention_heads"])
    n_kv = cfg.get("num_key_value_heads", d["num_key_value_heads"])
    n_kv = n_head if n_kv is None else _int(cfg, "num_key_value_heads", where, n_kv)
    if n_head % n_kv:
        raise UsageError(f"{where}: num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_kv}")
    head_dim = cfg.get("head_dim", d.get("head_dim"))
    if head_dim is None and ("head_dim" not in cfg or arch == "llama"):
        head_dim = hidden // n_head
    head_dim = _int({"head_dim": head_dim}, "head_dim", where, None)
    if head_dim % 2:
        raise UsageError(f"{where}: head_dim {head_dim} is odd; rotary embeddings need an even head dimension")
    if arch == "llama" and hidden % n_head:
        raise UsageError(f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads {n_head}")
    act = cfg.get("hidden_act", d["hidden_act"])
    if act not in ("silu", "swish"):
        raise UsageError(f"{where}: hidden_act {act!r} is not supported (llama.cpp's {arch} uses silu)")
    context = _int(cfg, "max_position_embeddings", where, d["max_position_embeddings"])
    layer_types = _layer_types(cfg, arch, n_layer, where) if arch != "llama" else ["full_attention"] * n_layer
    dtype = cfg.get("dtype") if cfg.get("dtype") is not None else cfg.get("torch_dtype")
    if dtype is not None and dtype not in _DTYPES:
        raise UsageError(f"{where}: dtype {dtype!r} is not supported (float32, float16 or bfloat16)")
    attn_bias = bool(cfg.get("attention_bias", d.get("attention_bias", True)))
    if attn_bias and arch == "qwen3":
        raise UsageError(
            f"{where}: attention_bias true is not supported for qwen3 (llama.cpp's qwen3 has no o_proj bias)"
        )
    return Backbone(
        arch=arch, architecture=architecture, head=head, hidden=hidden, n_layer=n_layer, n_head=n_head, n_kv=n_kv,
        head_dim=head_dim, ffn=_int(cfg, "intermediate_size", where, d["intermediate_size"]),
        vocab=_int(cfg, "vocab_size", where, d["vocab_size"]),
        eps=_number(cfg.get("rms_norm_eps", d["rms_norm_eps"]), "rms_norm_eps", where), context=context,
        rope=read_rope(cfg, arch, head_dim, context, layer_types, where),
        attn_bias=attn_bias, out_bias=attn_bias and arch != "qwen2", mlp_bias=bool(cfg.get("mlp_bias", False)),
        tie=bool(cfg.get("tie_word_embeddings", d["tie_word_embeddings"])), dtype=dtype, raw=cfg,
    )  # fmt: skip
