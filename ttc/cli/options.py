"""The options shared across commands (Annotated, so every command spells them the same way), and the
parsers of flags that take a list, key=value pairs, or problems on stdin."""

from __future__ import annotations

import math
import sys
from typing import Annotated

import typer

from ..errors import UsageError

PresetOpt = Annotated[str | None, typer.Option("--preset", "-p", help="Preset name or YAML path.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="GGUF path or hf://owner/repo/file.gguf.")]
GpuOpt = Annotated[
    int | None, typer.Option("--n-gpu-layers", help="Layers to offload (default: all when the build has a GPU).")
]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="CPU threads (default: physical cores).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same answer.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the full record as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Nothing on stderr but errors.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", help="Show llama.cpp's own log on stderr.")]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="llama: in-process llama.cpp (default); openai: an OpenAI-compatible server (vLLM, SGLang, llama-server).",
    ),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="The server for --backend openai, e.g. http://127.0.0.1:8000/v1 (key: TTC_API_KEY or OPENAI_API_KEY).",
    ),
]
PrmBaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--prm-base-url",
        metavar="URL|in-process",
        help="The PRM's server (default: the preset's backend.prm_base_url, else the policy's server; a built-in "
        "or local PRM that server does not list runs in-process); in-process runs it in llama.cpp here.",
    ),
]
ServedModelOpt = Annotated[
    str | None, typer.Option("--served-model", help="The model's name on the server (default: its only model).")
]
OptOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--opt", help="Strategy option key=value, repeatable (width=4, lookahead=2, sequential=4, select=best)."
    ),
]

ThinkBudgetOpt = Annotated[
    int | None,
    typer.Option(
        "--think-budget",
        help="Thinking models: thinking tokens per trace; at N the budget message and end marker are forced and the "
        "answer follows (0: no thinking).",
    ),
]
ThinkMinOpt = Annotated[
    int | None,
    typer.Option(
        "--think-min", help="Thinking models: an end of thinking before N tokens is replaced by the continuation word."
    ),
]
ThinkMessageOpt = Annotated[
    str | None, typer.Option("--think-message", help="Thinking models: the text forced at --think-budget.")
]
ThinkingOpt = Annotated[
    str | None,
    typer.Option(
        "--thinking", metavar="on|off", help="Thinking models: switch thinking on or off (where the template can)."
    ),
]


def think_options(budget: int | None, min_tokens: int | None, message: str | None, mode: str | None):
    """The thinking flags as ThinkOptions, checked (no model needed for these checks)."""
    from ..thinking import ThinkOptions, check_options

    opts = ThinkOptions(budget=budget, min_tokens=min_tokens, message=message, mode=mode)
    check_options(opts)
    return opts


def parse_list(text: str | None, what: str) -> list[str]:
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    if not items:
        raise UsageError(f"--{what} needs a comma-separated list")
    return items


def parse_options(pairs: list[str] | None) -> dict:
    """`--opt key=value` pairs; values that read as numbers become numbers."""
    from ..strategies.base import as_number

    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--opt takes key=value, got '{pair}'")
        number = as_number(value.strip())
        if isinstance(number, float) and not math.isfinite(number):
            raise UsageError(f"--opt {key.strip()} must be a finite number, got '{value.strip()}'")
        out[key.strip()] = number
    return out


def read_problems(problem: str | None) -> list[str]:
    """The problem argument, or one problem per line from stdin for `-` or no argument."""
    if problem is not None and problem != "-":
        from ..solve import check_problem

        check_problem(problem)
        return [problem]
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("no problem given: pass it as an argument, or pipe one problem per line into stdin")
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"stdin is not valid UTF-8 (byte {e.start}); pass text in UTF-8") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise UsageError("stdin holds no problem (it is empty or only whitespace)")
    return lines
