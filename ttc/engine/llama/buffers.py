"""Where llama.cpp keeps a model's weights on the CPU.

On a CPU with Intel AMX (Sapphire Rapids and later), a llama-cpp-python built with GGML_NATIVE moves quantized
weights into llama.cpp's AMX buffer type; there, decoding crashed the process (SIGSEGV in llama_decode) for
Gemma 3 270M Q4_K_M and for a Q8_0 value-head PRM (llama-cpp-python 0.3.36), and both ran with the weights
in plain CPU buffers. So ttc loads models with `use_extra_bufts` off (llama.cpp's --no-extra-bufts: no AMX,
no repacking) where llama.cpp reports AMX, and leaves the defaults elsewhere. Anything else in the process
that loads a model to compare with ttc's engine (the tests' reference `Llama`, a test server) loads it the
same way with `install_plain_cpu_buffers`.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

_LOAD_LOCK = threading.Lock()


def amx_in_use(lc) -> bool:
    """Would llama.cpp put quantized weights in its AMX buffer type (its system info says AMX_INT8 = 1)?"""
    try:
        return "AMX_INT8 = 1" in lc.llama_print_system_info().decode(errors="replace")
    except Exception:
        return False


@contextmanager
def plain_cpu_buffers(llama_cpp, when: bool | None = None):
    """While a model loads: no extra buffer types (AMX, and the CPU repack they come with), as llama.cpp's
    `--no-extra-bufts` does; `when` None: where AMX would be used. llama-cpp-python's `Llama` takes no such
    argument, so its default model parameters are amended while it is built (under a lock: another thread
    loading meanwhile gets them too)."""
    if not (amx_in_use(llama_cpp) if when is None else when):
        yield
        return
    low = llama_cpp.llama_cpp
    with _LOAD_LOCK:
        default = low.llama_model_default_params
        low.llama_model_default_params = _no_extra_bufts(default)
        try:
            yield
        finally:
            low.llama_model_default_params = default


def _no_extra_bufts(default):
    def amended():
        params = default()
        params.use_extra_bufts = False
        return params

    amended.ttc_plain = True
    return amended


def install_plain_cpu_buffers(llama_cpp) -> bool:
    """For the rest of the process, where AMX would be used: every model loads in plain CPU buffers."""
    low = llama_cpp.llama_cpp
    if not amx_in_use(llama_cpp) or getattr(low.llama_model_default_params, "ttc_plain", False):
        return False
    low.llama_model_default_params = _no_extra_bufts(low.llama_model_default_params)
    return True
