"""llama.cpp's own throughput programs as references for `ttc speed --reference DIR`.

DIR holds `llama-batched` (examples/batched: N streams from one prompt, sampled with a top-k / top-p / temp /
dist chain per stream) and `llama-batched-bench` (tools/batched-bench: the same decodes with no sampling), built
from the llama.cpp that llama-cpp-python vendors. Both run with the unified KV cache (`-kvu`), the threads, the
prompt and the number of generated tokens of the ttc measurement beside them; their tokens/s exclude prompt
evaluation (ttc's include it). ttc ships neither program and builds neither.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ...errors import TTCRuntimeError, UsageError

PROGRAMS = ("llama-batched", "llama-batched-bench")


def find_programs(folder: str) -> dict[str, Path]:
    """The reference programs in `folder` (a build's bin/ folder), or a usage error naming what is missing."""
    found = {name: Path(folder) / name for name in PROGRAMS}
    missing = [n for n, p in found.items() if not p.is_file()]
    if missing:
        raise UsageError(
            f"--reference {folder}: no {', '.join(missing)} there; build them from llama.cpp "
            "(cmake --build BUILD --target llama-batched llama-batched-bench) and pass BUILD/bin"
        )
    return found


def _run(cmd: list[str], timeout: float) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TTCRuntimeError(f"{Path(cmd[0]).name} ran past {timeout:.0f} s") from None
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        raise TTCRuntimeError(f"{Path(cmd[0]).name} failed (exit {r.returncode}): {tail[0]}")
    return r.stdout + r.stderr


def llama_batched(
    program: Path, model: str, prompt: str, n_prompt: int, tokens: int, n: int, threads: int, sampling: dict
) -> float:
    """Generated tokens/s of `llama-batched` for n streams of `tokens` tokens after the prompt (its own
    figure: tokens decoded over the generation loop's wall time). `-n` counts the prompt too."""
    cmd = [
        str(program), "-m", model, "-p", prompt, "-n", str(n_prompt + tokens), "-np", str(n), "-kvu",
        "-t", str(threads), "-tb", str(threads), "--temp", str(sampling["temperature"]),
        "--top-k", str(sampling["top_k"]), "--top-p", str(sampling["top_p"]), "--min-p", "0", "--seed", "0",
    ]  # fmt: skip
    out = _run(cmd, timeout=3600)
    m = re.search(r"decoded (\d+) tokens in ([\d.]+) s, speed: ([\d.]+) t/s", out)
    if not m:
        raise TTCRuntimeError("llama-batched printed no 'decoded ... speed: ... t/s' line")
    return float(m.group(3))


def llama_batched_bench(program: Path, model: str, n_prompt: int, tokens: int, n: int, threads: int) -> float:
    """Decode-only tokens/s (S_TG) of `llama-batched-bench` for n streams of `tokens` tokens after a shared
    prompt of n_prompt tokens."""
    n_ctx = n_prompt + n * (tokens + 1) + 64
    cmd = [
        str(program), "-m", model, "-c", str(n_ctx), "-b", "2048", "-ub", "512", "-npp", str(n_prompt),
        "-ntg", str(tokens), "-npl", str(n), "-pps", "-kvu", "-t", str(threads), "-tb", str(threads),
    ]  # fmt: skip
    out = _run(cmd, timeout=3600)
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0].isdigit():
            return float(cells[7])  # PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s
    raise TTCRuntimeError("llama-batched-bench printed no result row")
