"""Typed configuration read from presets/*.yaml: model, prompt format, step delimiter, answer format,
sampling defaults, revision layout, PRM, policy and backend (in-process or an OpenAI-compatible server).

Precedence is defaults < preset < command-line flags. Validation is strict: an unknown key or a value of
the wrong type is a UsageError naming the key and the file. Reading a preset has no side effects: it never
loads a model or touches the network (model references are resolved later, by `ttc.engine.models`).

A preset is found by name in the repository's `presets/` folder (or the copy shipped inside the wheel as
`ttc/_presets`), in `$TTC_PRESETS_DIR`, or given as a path to a YAML file.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UsageError

DEFAULT_PRESET = "tiny-arith"


@dataclass(frozen=True)
class PromptConfig:
    format: str = "raw"  # "raw": `template` is the whole prompt; "chat": the model's chat template from GGUF
    template: str = "{problem}"  # raw: prompt text; chat: the user message. Must contain {problem}
    system: str | None = None  # chat only: an optional system message


@dataclass(frozen=True)
class AnswerConfig:
    format: str = "auto"  # auto | boxed | the-answer-is | gsm8k | last-number (see ttc.answers)
    last_number_fallback: bool = False  # take the last number when no answer form is found


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.8  # for sampled strategies; greedy always uses 0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_tokens: int = 512  # per solution


@dataclass(frozen=True)
class RevisionConfig:
    """How a revision is asked (`revise`). The default, used when a preset has no `revision` section: the
    earlier attempts, oldest first, then the problem's own prompt again (the built-in pair's layout)."""

    # a revision's prompt (raw format) or user message (chat format), with {attempts} and {problem} or
    # {prompt}: the problem's own prompt text (prompt.template filled with the problem)
    template: str = "{attempts}{prompt}"
    attempt_template: str = "Attempt {index}:\n{attempt}\n\n"  # one earlier attempt: {attempt}, {index} from 1
    max_attempts: int = 4  # earlier attempts kept in context


@dataclass(frozen=True)
class PRMConfig:
    model: str | None = None  # GGUF path, hf://owner/repo/file.gguf or builtin:NAME; None = the policy
    format: str = "math-shepherd"  # math-shepherd | rlhflow | self-judge | value-head | classifier-head
    template: str = "{problem}\n"  # text before the first step, with {problem}
    step_tag: str = " ки"  # appended after each step's text (before the separator); scored at its last token
    # what the PRM reads between a step's tag and the next step; None = the policy's step delimiter
    # (Math-Shepherd: "step ки\nstep ки"); "" when the tag itself separates steps (the built-in PRM)
    step_separator: str | None = None
    good_token: str = "+"
    bad_token: str = "-"
    aggregation: str = "last"  # last | min | prod | mean
    # value-head / classifier-head (ttc prm import): the head file beside the backbone GGUF, and the
    # fingerprint that the GGUF and the head both carry (checked when the PRM loads). A classifier head served
    # by vLLM (backend.prm_base_url at `vllm serve Qwen/Qwen2.5-Math-PRM-7B`) needs neither: `model` then names
    # the served model, and vLLM's /pooling applies the head (ttc.prm.pooled)
    head: str | None = None
    fingerprint: str | None = None


PRM_FORMATS = ("math-shepherd", "rlhflow", "self-judge", "value-head", "classifier-head")
HEAD_PRM_FORMATS = ("value-head", "classifier-head")


@dataclass(frozen=True)
class BackendConfig:
    kind: str = "llama"  # llama: in-process llama.cpp | openai: an OpenAI-compatible server (vLLM, SGLang, ...)
    base_url: str | None = None  # openai: the server, e.g. http://127.0.0.1:8000/v1 (key: TTC_API_KEY/OPENAI_API_KEY)
    served_model: str | None = None  # the policy's name on the server; None = its only model (or the one named so)
    prm_base_url: str | None = None  # the PRM's server; None = the policy's; "in-process" = llama.cpp here
    concurrency: int = 32  # requests in flight at once, per server
    timeout_s: float = 300.0  # read timeout of one request
    max_retries: int = 4  # retries on 429, 5xx and connection errors, with exponential backoff
    dialect: str = "auto"  # auto: each server's better requests (vLLM: prompt lists, n, prompt_logprobs,
    # return_token_ids) | plain: only what every server takes (one request per prompt and per step tag)


DEFAULT_THINK_MESSAGE = "\n\nTime is up: I will stop thinking and give the final answer now.\n"


@dataclass(frozen=True)
class ThinkingConfig:
    """A thinking model's block (ttc.thinking). Every key left out is detected from the chat template; a
    section that names `start` and `end` declares a model thinking whatever its template says."""

    start: str | None = None  # the start marker, e.g. "<think>" (tokens of the vocabulary)
    end: str | None = None  # the end marker, e.g. "</think>"
    opened: bool | None = None  # the generation prompt itself opens the block (DeepSeek-R1 distills)
    switch: str | None = None  # the chat-template variable that turns thinking off (Qwen3: enable_thinking);
    # "" = it cannot be turned off
    enabled: bool = True  # think unless --thinking off
    message: str = DEFAULT_THINK_MESSAGE  # forced at --think-budget, before the end marker (--think-message)
    continuation: str = "Wait"  # forced in place of an end marker that comes before --think-min tokens
    answer_tokens: int = 512  # room for the answer after a think budget, when --max-tokens is not given


@dataclass(frozen=True)
class Preset:
    name: str = ""
    description: str = ""
    model: str = ""  # GGUF path, hf://owner/repo/file.gguf or builtin:NAME
    prompt: PromptConfig = field(default_factory=PromptConfig)
    step_delimiter: str = "\n\n"  # ends one reasoning step
    stop: tuple[str, ...] = ()  # extra stop strings for whole solutions
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    revision: RevisionConfig | None = field(default_factory=RevisionConfig)  # None: the default layout
    prm: PRMConfig | None = None
    policy: str | None = None  # compute-optimal policy YAML, relative to the preset's folder
    backend: BackendConfig | None = None  # where models run; None = in-process llama.cpp (flags can override)
    thinking: ThinkingConfig | None = None  # a thinking model's block; None = detected from the chat template
    source: str = field(default="", compare=False)  # the file it was read from (filled in by load_preset)


def _package_dir() -> Path:
    return Path(__file__).resolve().parent


def preset_dirs() -> list[Path]:
    """Folders searched for presets by name, first match wins."""
    dirs = []
    if os.environ.get("TTC_PRESETS_DIR"):
        dirs.append(Path(os.environ["TTC_PRESETS_DIR"]))
    dirs.append(_package_dir().parent / "presets")  # a checkout or editable install
    dirs.append(_package_dir() / "_presets")  # the copy inside a wheel
    return [d for d in dirs if d.is_dir()]


def list_presets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def find_preset(name_or_path: str) -> Path:
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not p.is_file():
            raise UsageError(f"preset file not found: {name_or_path}")
        return p
    known = list_presets()
    if name_or_path not in known:
        from difflib import get_close_matches

        close = get_close_matches(name_or_path, list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; known presets: {', '.join(known) or 'none'}"
        raise UsageError(f"unknown preset '{name_or_path}'{hint}")
    return known[name_or_path]


def load_preset(name_or_path: str | None = None) -> Preset:
    path = find_preset(name_or_path or DEFAULT_PRESET)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UsageError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a preset must be a YAML mapping of keys to values")
    data.setdefault("name", path.stem)
    preset = build(Preset, data, str(path), "")
    check_prm(preset.prm, str(path), preset.backend)
    return dataclasses.replace(preset, source=str(path))


def check_prm(prm: PRMConfig | None, path: str, backend: BackendConfig | None = None) -> None:
    """The checks on a prm section that no single key's type can make. A head PRM needs its head file, except
    when the preset serves it (backend.kind openai, prm_base_url not in-process: vLLM applies the head)."""
    if prm is None:
        return
    if prm.format not in PRM_FORMATS:
        raise UsageError(f"{path}: prm.format '{prm.format}' is not known ({', '.join(PRM_FORMATS)})")
    if prm.format in HEAD_PRM_FORMATS:
        served = backend is not None and backend.kind == "openai" and backend.prm_base_url != "in-process"
        missing = [k for k in ("model", "head") if getattr(prm, k) is None and not (k == "head" and served)]
        if missing:
            raise UsageError(
                f"{path}: prm.format {prm.format} needs prm.{' and prm.'.join(missing)} (written by ttc prm import)"
            )
    elif prm.head is not None or prm.fingerprint is not None:
        raise UsageError(f"{path}: prm.head and prm.fingerprint belong to the head formats, not {prm.format}")


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list of " + _type_name(typing.get_args(tp)[0])
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(tp, "null")


def _convert(tp, value, path: str, key: str):
    """Check `value` against the annotation `tp`; return it converted (lists to tuples, ints to floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        sections = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(sections) == 1:  # an optional section: its own errors name the key
            return build(sections[0], value, path, key + ".")
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, path, key)
            except UsageError:
                continue
    elif origin is tuple:
        if isinstance(value, list):
            return tuple(_convert(typing.get_args(tp)[0], v, path, f"{key}[{i}]") for i, v in enumerate(value))
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return build(tp, value, path, key + ".")
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise UsageError(f"{path}: key '{key}' must be {_type_name(tp)}, got {value!r}")


def build(cls, data: dict, path: str, prefix: str):
    """Build dataclass `cls` from a mapping, refusing unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            from difflib import get_close_matches

            close = get_close_matches(str(key), sorted(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise UsageError(f"{path}: unknown key '{prefix}{key}'{hint}")
        kwargs[key] = _convert(hints[key], value, path, prefix + key)
    return cls(**kwargs)


def preset_to_dict(preset: Preset) -> dict:
    """The preset as plain data (for `ttc presets show` and result records)."""
    d = dataclasses.asdict(preset)
    d.pop("source", None)
    return d
