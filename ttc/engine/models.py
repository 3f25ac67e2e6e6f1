"""Finding model files and checking them before llama.cpp sees them.

A model reference is one of:
    builtin:NAME                 a GGUF shipped inside the package (ttc/models/NAME)
    hf://owner/repo/file.gguf    a file on the Hugging Face Hub, resolved with huggingface_hub (cached;
                                 a clear error when offline and not cached)
    PATH                         a local GGUF file (~ expanded; relative paths from the current folder,
                                 then from the preset's folder)

`check_gguf` reads the header, metadata and tensor table (`gguf_header.read_gguf`, which never builds the
token list) and returns the file's facts, after refusing with one line a file that is not GGUF, is damaged
or truncated, names no architecture, or is a part of a split model that llama.cpp could not load.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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
    path = Path(ref).expanduser()
    if not path.is_absolute() and not path.exists() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        raise UsageError(f"model file not found: {ref}")
    if path.is_dir():
        raise UsageError(f"model path is a folder, not a GGUF file: {ref}")
    return path


def _resolve_hf(ref: str) -> Path:
    parts = ref[len("hf://") :].split("/")
    if len(parts) < 3 or not parts[-1].endswith(".gguf"):
        raise UsageError(f"bad Hub reference '{ref}': expected hf://owner/repo/file.gguf")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - a core dependency
        raise UsageError("hf:// references need huggingface_hub: pip install huggingface_hub") from None
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as e:  # offline, missing repo, missing file, auth: all end here
        kind = type(e).__name__
        first = str(e).strip().splitlines()[0] if str(e).strip() else kind
        raise TTCRuntimeError(
            f"could not get {filename} from Hub repo {repo_id} ({kind}: {first[:160]}); "
            "if offline, download it elsewhere and pass the local path"
        ) from None


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
