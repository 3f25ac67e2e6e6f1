"""`python -m ttc.flashbench [MODEL]`: what flash attention costs llama.cpp per decode, by decode size.

The measurement behind `LlamaEngine.flash_for`. For each shape (live branches, tokens already cached per
branch, new tokens fed per branch), in one run: two contexts of the same size, one with flash attention and
one without; each fills its branches, then times one decode of the new tokens (best of `--reps`). Then
`engine.sample` of N streams (64 tokens each) with and without it. It prints both times and their ratio
(flash / no flash: below 1 flash attention pays). MODEL defaults to the shipped PRM. On a GPU build pass
--gpu-layers to compare there.
"""

from __future__ import annotations

import argparse
import time

from ..base import SamplingParams
from ..models import resolve_model
from .branches import LlamaBranches
from .context import _Context
from .engine import FLASH_MIN_TOKENS, LlamaEngine

PREFIX = 30  # tokens of the shared prompt
# (live branches, tokens cached per branch, new tokens per branch): a search's step feeds, then generation
SHAPES = [
    (4, 50, 1), (4, 50, 10), (4, 50, 15), (4, 50, 16), (4, 50, 32), (4, 200, 10), (4, 200, 32), (4, 250, 10),
    (8, 50, 8), (8, 50, 16), (16, 50, 1), (16, 50, 10), (16, 100, 10), (64, 80, 1), (128, 80, 1),
]  # fmt: skip


def time_feed(engine: LlamaEngine, flash: bool, live: int, cached: int, new: int, reps: int) -> float:
    """Best seconds of one decode of `new` tokens on each of `live` branches holding `cached` tokens."""
    ctx = _Context(engine, PREFIX + 1 + live * (cached + new + 8) + 64, live + 1, flash)
    best = float("inf")
    try:
        for _ in range(reps):
            ctx.clear()
            bs = LlamaBranches(engine, ctx, [1] + [ord("1")] * PREFIX, owns_context=False, scoring=True)
            kids = bs.fork(0, live)
            bs.drop([0])
            bs.feed(kids, [[ord("2")] * cached for _ in kids], [[cached - 1]] * live, [ord("+")])
            t = time.perf_counter()
            bs.feed(kids, [[ord("3")] * new for _ in kids], [[new - 1]] * live, [ord("+")])
            best = min(best, time.perf_counter() - t)
    finally:
        ctx.close()
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ttc.flashbench", description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="builtin:tiny-arith-prm.gguf", help="GGUF path or model reference")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--reps", type=int, default=8)
    args = ap.parse_args(argv)
    engine = LlamaEngine(str(resolve_model(args.model)), n_gpu_layers=args.gpu_layers, n_threads=args.threads)
    print(f"{engine.info.name}, {engine.n_threads} threads; ttc turns flash attention on from {FLASH_MIN_TOKENS}")
    print(f"{'live':>5} {'cached':>6} {'new':>4} {'tokens':>6} {'no flash ms':>11} {'flash ms':>9} {'ratio':>6}")
    for live, cached, new in SHAPES:
        off = time_feed(engine, False, live, cached, new, args.reps)
        on = time_feed(engine, True, live, cached, new, args.reps)
        print(f"{live:5d} {cached:6d} {new:4d} {live * new:6d} {off * 1e3:11.2f} {on * 1e3:9.2f} {on / off:6.3g}")
    print(f"{'sampled streams':>15} {'no flash ms':>11} {'flash ms':>9} {'ratio':>6}")
    for n in (1, 2, 4, 8):
        off, on = (time_sample(engine, mode, n, args.reps) for mode in ("off", "on"))
        print(f"{n:15d} {off * 1e3:11.2f} {on * 1e3:9.2f} {on / off:6.3g}")
    engine.close()


def time_sample(engine: LlamaEngine, mode: str, n: int, reps: int) -> float:
    """Best seconds of `engine.sample` of n streams of 64 tokens with flash attention forced on or off."""
    engine.flash_attn, before = mode, engine.flash_attn
    params = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True)
    best = float("inf")
    try:
        for _ in range(reps):
            t = time.perf_counter()
            engine.sample("Problem: 37+48-19+5-61+22\nSolution:\n", n, params)
            best = min(best, time.perf_counter() - t)
    finally:
        engine.flash_attn = before
    return best


if __name__ == "__main__":
    main()
