"""Choosing and describing a served model: where the backend settings come from (flags < preset), which
model on a server is the policy or the PRM, and what is known of it (parameters, context, chat template).

Precedence: the preset's `backend` section, then the flags (--backend, --base-url, --served-model,
--prm-base-url). The PRM runs on --prm-base-url / `backend.prm_base_url` when set (the value `in-process` runs
it in llama.cpp here instead; a URL puts it on a server even when the policy runs here), else on the policy's
server, where it must be listed under its own name; when it is not listed there and the PRM is a built-in or
local file, `Solver` runs it in-process with one note. A remote model's facts come from the server where it
tells them (llama-server's /v1/models `meta` and /props, vLLM's and SGLang's `max_model_len`), else from a
local copy of the same GGUF when the preset's model reference has one (a built-in, an existing file, or an
hf:// file already in the Hugging Face cache; nothing is downloaded), else are unknown: 0 parameters, so the
FLOPs estimate is 0. A chat-format preset needs the chat template from one of these (llama-server's /props or
a local copy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import UsageError

IN_PROCESS = "in-process"  # backend.prm_base_url value: run the PRM in llama.cpp, not on a server


class PRMNotServed(UsageError):
    """The policy's server does not list the PRM (a PRM expected there because no other place was named)."""


@dataclass(frozen=True)
class RemoteSpec:
    """How to reach one served model."""

    base_url: str
    served_model: str | None = None  # None = chosen from the server's list (by `model_hint`)
    model_hint: str | None = None  # the preset's model reference, to pick by name among several
    require_hint: bool = False  # the model must be listed under the hint's name (a PRM on the policy's server)
    concurrency: int = 32
    timeout_s: float = 300.0
    max_retries: int = 4
    dialect: str = "auto"


DIALECTS = ("auto", "plain")


def remote_spec(models, preset, role: str, ref: str) -> RemoteSpec | None:
    """Where `role` ("policy" or "prm") runs: a RemoteSpec for a server, None for in-process llama.cpp."""
    cfg = preset.backend
    where = preset.source or preset.name or "the preset"
    kind = models.backend or (cfg.kind if cfg is not None else None) or "llama"
    if kind not in ("llama", "openai"):
        src = "--backend" if models.backend else f"{where}: backend.kind"
        raise UsageError(f"{src} must be 'llama' (in-process) or 'openai' (a server), got '{kind}'")
    limits = {}
    if cfg is not None:
        limits = {"concurrency": cfg.concurrency, "timeout_s": cfg.timeout_s, "max_retries": cfg.max_retries}
        if cfg.dialect not in DIALECTS:
            raise UsageError(f"{where}: backend.dialect must be 'auto' or 'plain', got {cfg.dialect!r}")
        limits["dialect"] = cfg.dialect
    if kind == "llama":  # the policy here; the PRM too, unless it was put on a server
        url = prm_base_url(models, preset) if role == "prm" else None
        return None if url in (None, IN_PROCESS) else RemoteSpec(url, None, model_hint=ref, **limits)
    base = models.base_url or (cfg.base_url if cfg is not None else None)
    if not base:
        raise UsageError("--backend openai needs the server's URL: pass --base-url URL or set backend.base_url")
    policy_ref = models.model or preset.model
    served = models.served_model or (cfg.served_model if cfg is not None else None)
    if role == "policy":
        return RemoteSpec(base, served, model_hint=policy_ref, **limits)
    prm_url = prm_base_url(models, preset)
    if prm_url == IN_PROCESS:
        return None
    if prm_url is None or prm_url.rstrip("/") == base.rstrip("/"):
        if ref == policy_ref:  # the PRM is the policy's own model
            return RemoteSpec(base, served, model_hint=ref, **limits)
        return RemoteSpec(base, None, model_hint=ref, require_hint=True, **limits)
    return RemoteSpec(prm_url, None, model_hint=ref, **limits)


def prm_base_url(models, preset) -> str | None:
    """Where the PRM was placed: --prm-base-url, else the preset's backend.prm_base_url, else None."""
    cfg = preset.backend
    url = models.prm_base_url or (cfg.prm_base_url if cfg is not None else None)
    if url is not None and url != IN_PROCESS and not url.startswith(("http://", "https://")):
        raise UsageError(f"--prm-base-url takes an http(s) URL or '{IN_PROCESS}', got {url!r}")
    return url


def _stem(ref: str | None) -> str:
    name = (ref or "").rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def choose_model(ids: list[str], wanted: str | None, hint: str | None, require_hint: bool, where: str) -> str:
    """The served model to use: `wanted` by name, else the one named like the hint, else the only one."""
    listed = ", ".join(ids) or "none"
    if wanted:
        if wanted not in ids:
            raise UsageError(f"server at {where} does not serve '{wanted}' (it serves: {listed}); fix --served-model")
        return wanted
    stem = _stem(hint).lower()
    if stem:
        for match in (lambda i: _stem(i).lower() == stem, lambda i: stem in i.lower()):
            hits = [i for i in ids if match(i)]
            if hits:
                return hits[0]
    if require_hint:
        raise PRMNotServed(
            f"server at {where} serves {listed}, not the PRM '{hint}'; serve it there, point --prm-base-url "
            f"(backend.prm_base_url) at a server that does, or pass --prm-base-url {IN_PROCESS} "
            f"(backend.prm_base_url: {IN_PROCESS})"
        )
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise UsageError(f"server at {where} lists no models at /v1/models")
    raise UsageError(f"server at {where} serves several models ({listed}); pick one with --served-model")


def local_copy(ref: str | None, base_dir) -> str | None:
    """A local GGUF for a model reference, without downloading: a built-in, an existing file, or an hf://
    file already in the Hugging Face cache."""
    if not ref:
        return None
    if ref.startswith("hf://"):
        parts = ref[len("hf://") :].split("/")
        if len(parts) < 3:
            return None
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache("/".join(parts[:2]), "/".join(parts[2:]))
        except Exception:
            return None
        return found if isinstance(found, str) else None
    from ..models import resolve_model

    try:
        return str(resolve_model(ref, base_dir=base_dir))
    except Exception:
        return None


@dataclass
class Facts:
    n_params: int = 0
    n_ctx: int = 0
    chat_template: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    token_texts: Callable[[], list[str] | None] = lambda: None


def model_facts(card: dict, props: dict, local_model: str | None) -> Facts:
    """What the server says of its model (its /v1/models card, llama-server's /props), gaps filled from a
    local copy of the GGUF."""
    meta = card.get("meta") if isinstance(card.get("meta"), dict) else {}
    facts = Facts(
        n_params=int(meta.get("n_params") or 0),
        n_ctx=int(meta.get("n_ctx_train") or card.get("max_model_len") or 0),
        chat_template=props.get("chat_template") or None,
    )
    if local_model and Path(local_model).is_file():
        _fill_from_gguf(facts, local_model)
    return facts


def _fill_from_gguf(facts: Facts, path: str) -> None:
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path)
    except Exception:
        return
    scalars = {}
    for name, f in reader.fields.items():
        if len(f.types) == 1 and not name.startswith("GGUF."):
            try:
                scalars[name] = str(f.contents())
            except Exception:
                continue
    arch = scalars.get("general.architecture", "")
    facts.metadata = {**scalars, **facts.metadata}
    facts.n_params = facts.n_params or sum(int(t.n_elements) for t in reader.tensors)
    facts.n_ctx = facts.n_ctx or int(scalars.get(f"{arch}.context_length", 0) or 0)
    facts.chat_template = facts.chat_template or scalars.get("tokenizer.chat_template")
    cache: list = []

    def token_texts() -> list[str] | None:
        if not cache:
            field_ = reader.fields.get("tokenizer.ggml.tokens")
            cache.append(list(field_.contents()) if field_ is not None else None)
        return cache[0]

    facts.token_texts = token_texts
