"""`ttc speed`: generation throughput of ttc's batched sampler against a sequential baseline.

For each N, in one run on the same model, threads and sampling settings:
  batched     one `engine.sample(prompt, N)` call: N streams over one shared prompt, one decode per step
  sequential  llama-cpp-python's `Llama.create_completion` in a loop (what a script would do without ttc),
              timed over min(N, 8) completions: a loop's rate does not depend on N
Both generate exactly `tokens` tokens per sample (end-of-generation tokens are masked), and tokens/s counts
generated tokens over wall time, prompt evaluation included. Sampling: temperature / top-k / top-p as given
(llama-batched's settings by default: 0.8, off, off). `--reference DIR` runs llama.cpp's `llama-batched` and
`llama-batched-bench` (decode only) from DIR right after ttc at each N, with the same settings (reference.py).

`--stats` also times the batched call with token statistics on (SamplingParams.stats_top_k = 20, what the
confidence strategies sample with), alternating STATS_PAIRS times with it off, and prints the ratio of the
medians: the overhead of statistics, measured side by side in one run; and the same ratio of tokens per
second of this process's CPU time (on a machine shared with other work, wall time swings with their load;
CPU time counts what the sampler itself did, and with --threads 1 no thread spins waiting for another).

`--think` does the same with a thinking controller on every sequence (counting thinking tokens as a thinking
model's run does, with a budget never reached): the cost of per-sequence budget tracking.

`--random` writes a random-weight model shaped like llama.cpp's batched-bench reference (n_embd 768,
8 layers, f16, about 76 M parameters) to a temporary folder and measures on it.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ...errors import UsageError
from ..base import SamplingParams, ThinkControl
from ..models import physical_cores, resolve_model

# A shared prompt of about 64 tokens on a byte-level vocabulary.
STATS_PAIRS = 5  # alternating off / on timings per N for --stats
PROMPT = "Problem: 37+48-19+5-61+22\nSolution:\n37+48=85\n85-19=66\n66+5=71\n71-61=10\n10+22=32\n"


def parse_ns(text: str) -> list[int]:
    try:
        ns = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--n must be comma-separated positive integers, got '{text}'") from None
    if not ns or any(n < 1 for n in ns):
        raise UsageError(f"--n must be comma-separated positive integers, got '{text}'")
    return ns


def write_random_model(folder: Path) -> Path:
    """A random f16 llama model like batched-bench's reference (n_embd 768, 8 layers, n_ff 3072)."""
    from ...builtin.gguf_llama import ByteVocab, GGUFSpec, LlamaShape, random_llama_tensors, write_llama_gguf

    vocab = ByteVocab()
    shape = LlamaShape(n_vocab=vocab.size, n_embd=768, n_layer=8, n_head=12, n_head_kv=12, n_ff=3072, n_ctx=8192)
    path = folder / "random-76m-f16.gguf"
    tensors = random_llama_tensors(shape, seed=0, scale=1.0)
    return write_llama_gguf(path, shape, tensors, GGUFSpec(name="random-76m", vocab=vocab, matrix_dtype="f16"))


def run_speed(
    model: str | None,
    preset: str | None,
    ns: list[int],
    tokens: int,
    threads: int | None,
    n_gpu_layers: int | None,
    random_model: bool = False,
    progress: Console | None = None,
    sampling: dict | None = None,
    sequential_baseline: bool = True,
    reference: str | None = None,
    stats: bool = False,
    think: bool = False,
) -> list[dict]:
    """One row per N: ttc's batched tokens/s, and the sequential loop's and llama.cpp's references' beside it.
    `sampling`: temperature, top_k, top_p (default 0.8, 0, 1.0)."""
    from llama_cpp import Llama

    from . import reference as ref
    from .buffers import plain_cpu_buffers
    from .engine import LlamaEngine, gpu_layers

    if tokens < 1:
        raise UsageError(f"--tokens must be at least 1, got {tokens}")
    sampling = {"temperature": 0.8, "top_k": 0, "top_p": 1.0, **(sampling or {})}
    programs = ref.find_programs(reference) if reference else None
    tmp = None
    if random_model:
        tmp = tempfile.TemporaryDirectory(prefix="ttc-speed-")
        path = write_random_model(Path(tmp.name))
    else:
        from ...presets import load_preset

        p = load_preset(preset)
        path = resolve_model(model or p.model, base_dir=Path(p.source).parent)
    threads = threads or physical_cores()
    engine = LlamaEngine(str(path), n_gpu_layers=n_gpu_layers, n_threads=threads)
    n_prompt = len(engine.tokenize(PROMPT))
    eog = {t: float("-inf") for t in engine.eog_tokens()}
    with plain_cpu_buffers(engine.lc):  # as the engine loads it
        baseline = Llama(
            model_path=str(path), n_ctx=n_prompt + tokens + 16, n_threads=threads, n_threads_batch=threads,
            n_gpu_layers=gpu_layers(n_gpu_layers),
            verbose=False,
        )  # fmt: skip
    params = SamplingParams(
        temperature=sampling["temperature"], top_k=sampling["top_k"], top_p=sampling["top_p"],
        max_tokens=tokens, ignore_eos=True, seed=0,
    )  # fmt: skip

    # --think: every sequence carries a thinking controller that counts its tokens (the block is open from the
    # prompt on, the end marker is an end-of-generation token, masked, and the budget is never reached), so the
    # two runs sample the same tokens and differ only by the per-sequence tracking
    watched = dataclasses.replace(
        params, thinking=ThinkControl(end=(engine.eog_tokens()[0],), opened=True, budget=10**9, cut=(0,))
    )
    variant = dataclasses.replace(params, stats_top_k=20) if stats else watched

    def batched(n: int, on: bool = False, cpu: bool = False) -> float:
        """Generated tokens per second of wall time (`cpu`: per second of this process's CPU time); `on`: with
        token statistics (--stats) or the thinking controller (--think)."""
        before = engine.usage.snapshot()
        t0, c0 = time.perf_counter(), time.process_time()
        out = engine.sample(PROMPT, n, variant if on else params)
        wall, used = time.perf_counter() - t0, time.process_time() - c0
        spent = engine.usage - before
        assert spent.generated_tokens == sum(c.n_generated for c in out)
        return spent.generated_tokens / (used if cpu else wall)

    def sequential(n: int) -> float:
        generated, t0 = 0, time.perf_counter()
        for i in range(n):
            r = baseline.create_completion(
                PROMPT, max_tokens=tokens, temperature=sampling["temperature"], top_p=sampling["top_p"],
                top_k=sampling["top_k"], min_p=0.0, seed=i, logit_bias=eog,
            )  # fmt: skip
            generated += r["usage"]["completion_tokens"]
        return generated / (time.perf_counter() - t0)

    if progress:
        progress.print(
            f"model {engine.info.name} ({engine.info.n_params / 1e6:.1f} M parameters), {threads} threads, "
            f"prompt {n_prompt} tokens, {tokens} generated tokens per sample"
        )
    batched(2)  # warm up both paths
    if sequential_baseline:
        sequential(1)
    rows = []
    for n in ns:
        if stats or think:  # alternate off / on, so that both see the same machine load
            pairs = [(batched(n), batched(n, True)) for _ in range(STATS_PAIRS)]
            off, on = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
            cpu = [(batched(n, cpu=True), batched(n, True, cpu=True)) for _ in range(STATS_PAIRS)]
            cpu_off, cpu_on = statistics.median(p[0] for p in cpu), statistics.median(p[1] for p in cpu)
            row: dict = {"n": n, "batched_tokens_per_s": round(off, 2)}
            what = "stats" if stats else "think"
            row.update(
                {f"{what}_tokens_per_s": round(on, 2), f"{what}_ratio": round(on / off, 3),
                 f"{what}_cpu_ratio": round(cpu_on / cpu_off, 3)}
            )  # fmt: skip
        else:
            row = {"n": n, "batched_tokens_per_s": round(batched(n), 2)}
        if sequential_baseline:
            s = sequential(min(n, 8))
            row.update(sequential_tokens_per_s=round(s, 2), ratio=round(row["batched_tokens_per_s"] / s, 3))
        if programs:
            lb = ref.llama_batched(programs["llama-batched"], str(path), PROMPT, n_prompt, tokens, n, threads, sampling)
            bb = ref.llama_batched_bench(programs["llama-batched-bench"], str(path), n_prompt, tokens, n, threads)
            row.update(
                llama_batched_tokens_per_s=lb, batched_bench_decode_tokens_per_s=bb,
                ratio_to_llama_batched=round(row["batched_tokens_per_s"] / lb, 3),
            )  # fmt: skip
        rows.append(row)
        if progress:
            progress.print(f"  N={n}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "n"))
    if progress:
        columns = {
            "batched_tokens_per_s": "batched", "stats_tokens_per_s": "with stats", "stats_ratio": "stats ratio",
            "stats_cpu_ratio": "stats CPU ratio", "think_tokens_per_s": "with think control",
            "think_ratio": "think ratio", "think_cpu_ratio": "think CPU ratio",
            "sequential_tokens_per_s": "sequential", "ratio": "ratio",
            "llama_batched_tokens_per_s": "llama-batched", "batched_bench_decode_tokens_per_s": "batched-bench",
            "ratio_to_llama_batched": "vs llama-batched",
        }  # fmt: skip
        shown = [k for k in columns if k in rows[0]]
        table = Table(title="ttc speed: generated tokens/s (batched-bench: decode only, no sampling)")
        table.add_column("N", justify="right")
        for k in shown:
            table.add_column(columns[k], justify="right")
        for r in rows:
            table.add_row(str(r["n"]), *(f"{r[k]:.2f}x" if "ratio" in k else f"{r[k]:.1f}" for k in shown))
        progress.print(table)
    engine.close()
    baseline.close()
    if tmp is not None:
        tmp.cleanup()
    return rows
