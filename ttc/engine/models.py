"""Finding model files and checking them before llama.cpp sees them.

A model reference is one of:
    builtin:NAME                 a GGUF shipped inside the package (ttc/models/NAME)
    hf://owner/repo/file.gguf    a file on the Hugging Face Hub, resolved with huggingface_hub (cached;
                                 a clear error when offline and not cached)
    PATH                         a local GGUF file (~ expanded; relative paths from the current folder,
                                 then from the preset's folder)

`check_gguf` reads the header and tensor table with the `gguf` package and checks that every tensor's data
lies inside the file, so a file that is not GGUF or is truncated gives a one-line error instead of
reaching llama.cpp.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import TTCRuntimeError, UsageError

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


def check_gguf(path: str | Path) -> int | None:
    """Refuse files that are not GGUF or whose tensor data runs past the end of the file; return the
    model's training context length when the file states it."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise TTCRuntimeError(f"{path}: not a GGUF file (it starts with {magic!r}, GGUF files with b'GGUF')")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        size = path.stat().st_size
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as e:
        raise TTCRuntimeError(f"{path}: damaged or truncated GGUF file ({type(e).__name__}: {e})"[:300]) from None
    if end > size:
        raise TTCRuntimeError(f"{path}: truncated GGUF file ({size} bytes, its tensors need {end})")
    return _context_length(reader)


def _context_length(reader) -> int | None:
    try:
        arch_field = reader.fields["general.architecture"]
        arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
        field = reader.fields[f"{arch}.context_length"]
        return int(field.parts[field.data[0]][0])
    except (KeyError, IndexError, ValueError, UnicodeDecodeError):
        return None


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
