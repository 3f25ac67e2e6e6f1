"""Running a call on a thread with a deep stack: llama.cpp's tokenizer recurses once per character of a long
unbroken run (a 60,000-digit number overflowed the default 8 MB stack and killed the process with SIGSEGV),
so the engine tokenizes long texts on such a thread."""

from __future__ import annotations

import threading

LONG_TEXT = 8_192  # characters: longer texts are tokenized on a thread with a deep stack
DEEP_STACK = 512 << 20  # bytes: a 60,000-character run of digits overflowed the default 8 MB and crashed


def on_deep_stack(fn):
    """fn() on a thread with a DEEP_STACK stack, its result or exception passed back."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            out["error"] = e

    old = threading.stack_size(DEEP_STACK)
    try:
        t = threading.Thread(target=run, name="ttc-tokenize")
        t.start()
    finally:
        threading.stack_size(old)
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]
