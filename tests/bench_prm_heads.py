"""Head PRM vs "+/-" token PRM on the same backbone: time to score N candidates of T tokens, side by side.

    python tests/bench_prm_heads.py [--checkpoint DIR] [--type f16] [--candidates 16] [--tokens 200]

Without --checkpoint it writes a random Qwen2 value-head checkpoint (tests/hf_checkpoints.py; hidden 512,
8 layers, a 32k vocabulary so that the "+/-" path's logits rows cost what they do in a real model's
share) and imports it with `ttc prm import`. Both paths read the same token ids at the same step positions
(one step tag every `--step` tokens) after the same prefix, in the same llama.cpp build and thread count:
  head    Engine.hidden_at + the value head (numpy), as the value-head format scores
  tokens  Engine.logprobs_at of two tokens, as the math-shepherd format scores
Each is run `--repeats` times, alternating; the median wall time and the median CPU time of this process
(all its threads: the fairer figure on a machine that other jobs share) are printed for each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="a Hugging Face value-head PRM folder (default: a random one)")
    ap.add_argument("--type", default="f16", choices=["f16", "f32", "q8_0"])
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--step", type=int, default=20, help="tokens per step (one tag at the end of each)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import yaml

    from ttc.engine.llama import LlamaEngine
    from ttc.presets import PRMConfig
    from ttc.prm.heads import HeadPRM
    from ttc.prm.hf_import import import_checkpoint

    work = Path(tempfile.mkdtemp(prefix="ttc-bench-prm-"))
    folder = Path(args.checkpoint) if args.checkpoint else None
    if folder is None:
        from hf_checkpoints import make_checkpoint

        folder = make_checkpoint(
            work / "hf", "value", seed=0, hidden=512, layers=8, heads=8, kv_heads=2, intermediate=1408,
            extra_vocab=32000, init=0.05,
        )  # fmt: skip
    section = yaml.safe_load(import_checkpoint(str(folder), work / "out", args.type).read_text())["prm"]
    engine = LlamaEngine(section["model"], n_threads=args.threads)
    prm = HeadPRM(engine, PRMConfig(**section), "\n\n")
    rng = np.random.default_rng(0)
    normal = [i for i in range(200, 380)]  # ordinary BPE tokens of the small tokenizer (not special, not pad)
    suffixes, positions = [], []
    for _ in range(args.candidates):
        ids = [int(t) for t in rng.choice(normal, size=args.tokens)]
        pos = list(range(args.step - 1, args.tokens, args.step))
        for p in pos:
            ids[p] = prm.tag_id
        suffixes.append(ids)
        positions.append(pos)
    prefix = prm.prefix("Natalia sold clips to 48 of her friends in April, and then half as many in May.")
    good, bad = engine.tokenize("+", add_bos=False)[0], engine.tokenize("-", add_bos=False)[0]

    def head() -> None:
        for h in engine.hidden_at(prefix, suffixes, positions):
            prm.head(h)

    def tokens() -> None:
        engine.logprobs_at(prefix, suffixes, positions, [good, bad])

    times: dict[str, list[float]] = {"head": [], "tokens": []}
    cpu: dict[str, list[float]] = {"head": [], "tokens": []}
    head(), tokens()  # warm: contexts created, pages touched
    for _ in range(args.repeats):
        for name, fn in (("head", head), ("tokens", tokens)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    n = engine.info.n_params
    print(f"backbone {engine.info.name} ({args.type}, {n / 1e6:.1f}M parameters, {args.threads} threads); "
          f"{args.candidates} candidates x {args.tokens} tokens, a step tag every {args.step}")  # fmt: skip
    med = {k: statistics.median(v) for k, v in times.items()}
    mcpu = {k: statistics.median(v) for k, v in cpu.items()}
    for name, label in (("head", "value head on hidden states"), ("tokens", '"+/-" token log-probabilities')):
        runs = " ".join(f"{t:.3f}" for t in times[name])
        print(f"  {label:32s} wall median {med[name]:.3f} s, CPU median {mcpu[name]:.3f} s   wall runs: {runs}")
    print(f"  head / tokens: wall {med['head'] / med['tokens']:.3f}, CPU {mcpu['head'] / mcpu['tokens']:.3f}")
    engine.close()


if __name__ == "__main__":
    main()
