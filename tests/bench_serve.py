"""Benchmark: do requests that arrive together share the engine? `ttc serve` on the built-in pair, the real
`openai` client.

    python tests/bench_serve.py [--clients 8] [--each 8] [--repeats 3] [--threads N]

Times K clients each asking `ttc/majority@M` at once against one client asking `ttc/majority@(K*M)` (the same
continuations' worth of work in one request), medians over the repeats, printed side by side with their
ratio (target: at most 1.3x); then checks that the K answers equal those of the same requests sent one at a
time with the same seeds, and says how the scheduler batched them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openai  # noqa: E402
from serve_helpers import Server  # noqa: E402

PROBLEM = "37+48-19+23"


def ask(client, budget: int, seed: int) -> str:
    r = client.chat.completions.create(
        model=f"ttc/majority@{budget}", messages=[{"role": "user", "content": PROBLEM}], seed=seed
    )
    return r.choices[0].message.content + "|" + json.dumps(r.model_extra["ttc"]["results"][0]["candidates"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--each", type=int, default=8, help="the budget of each client's majority vote")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads of the server")
    args = ap.parse_args()
    extra = ["--threads", str(args.threads)] if args.threads else []
    server = Server("--preset", "tiny-arith", *extra)
    try:
        client = openai.OpenAI(base_url=server.base + "/v1", api_key="none", max_retries=0, timeout=600)
        k, m = args.clients, args.each
        ask(client, k * m, 99)  # warm-up: contexts sized for the largest wave
        one, many, answers = [], [], []
        with ThreadPoolExecutor(k) as pool:
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                ask(client, k * m, 0)
                one.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                answers = list(pool.map(lambda s: ask(client, m, s), range(k)))
                many.append(time.perf_counter() - t0)
        batches = server.health()["batches"]
        alone = [ask(client, m, s) for s in range(k)]
        a, b = statistics.median(one), statistics.median(many)
        print(f"{'requests':<34}{'wall s (median of ' + str(args.repeats) + ')':>26}")
        print(f"{f'1 client, majority@{k * m}':<34}{a:>26.3f}")
        print(f"{f'{k} clients at once, majority@{m} each':<34}{b:>26.3f}")
        print(f"ratio {b / a:.2f}x (target <= 1.3x)")
        print(f"answers equal to the same requests one at a time: {answers == alone}")
        print(f"calls per decode loop in the last batches: {[c for c, _ in batches[-2 * args.repeats - k :]]}")
        return 0 if answers == alone else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
