"""llama.cpp's own log: off stderr unless --verbose, with its error lines kept to explain a failed load.

llama.cpp and ggml print through one callback (`llama_log_set` sets ggml's too). llama-cpp-python installs
one that maps ggml's log levels as they were before ggml renumbered them (DEBUG=1 ... ERROR=4), so it
prints warnings as errors: every context on Gemma 3 says "llama_kv_cache_iswa: using full-size SWA cache"
on stderr even with verbose=False. `install` replaces it with ours: quiet, it prints nothing and keeps the
last error lines (`errors`); verbose, it prints INFO and above. The callback is process-wide, so it is
installed again before each context is created, in case anything else replaced it.
"""

from __future__ import annotations

import ctypes
import re
import sys
from collections import deque
from pathlib import Path
from typing import Any

DEBUG, INFO, WARN, ERROR, CONT = 1, 2, 3, 4, 5  # enum ggml_log_level (NONE = 0)

errors: deque[str] = deque(maxlen=16)  # llama.cpp's latest error lines, whether shown or not
# verbose: print INFO and above; last: the level a CONT message continues; error_open: the last error line
# has not ended yet; callback: our ctypes callback, kept referenced (C holds only its pointer)
_state: dict[str, Any] = {"verbose": False, "last": 0, "error_open": False, "callback": None}


def _on_log(level: int, text: bytes | None, user_data) -> None:
    try:
        if level == CONT:
            level = _state["last"]
        else:
            _state["last"] = level
        msg = text.decode("utf-8", errors="replace") if text else ""
        if level >= ERROR:
            if _state["error_open"] and errors:
                errors[-1] += msg
            else:
                errors.append(msg)
        _state["error_open"] = level >= ERROR and not msg.endswith("\n")
        if _state["verbose"] and level >= INFO:
            sys.stderr.write(msg)
            sys.stderr.flush()
    except Exception:  # an exception must not cross into C; the log is not worth a crash
        pass


def install(lc, verbose: bool) -> None:
    """Route llama.cpp's and ggml's log through ttc: shown when `verbose`, else dropped (errors kept)."""
    _state["verbose"] = bool(verbose)
    if _state["callback"] is None:
        _state["callback"] = lc.llama_log_callback(_on_log)
    lc.llama_log_set(_state["callback"], ctypes.c_void_p(0))


_UNKNOWN_ARCH = re.compile(r"unknown model architecture: '([^']*)'")
_REASON = re.compile(r"error loading model(?: architecture)?: (.*)")


def load_failure(path: str | Path, exc: Exception) -> str:
    """One line saying why llama.cpp refused to load `path`, from its own error lines."""
    said = " ".join(line.strip() for line in errors if line.strip())
    arch = _UNKNOWN_ARCH.search(said)
    if arch:
        try:
            from importlib.metadata import version

            build = f"llama-cpp-python {version('llama-cpp-python')}"
        except Exception:
            build = "llama-cpp-python"
        return (
            f"{path}: model architecture '{arch.group(1)}' is unknown to the llama.cpp in {build}; "
            "a newer llama-cpp-python may know it (pip install -U llama-cpp-python)"
        )
    reasons = [m.group(1).strip() for m in map(_REASON.search, errors) if m]
    reason = reasons[-1] if reasons else (said or str(exc))
    return f"llama.cpp could not load {path}: {reason}"[:400]
