"""HTTP requests and wall time per problem through the vLLM servers of `tests/vllm_servers.py up DIR`.

    python tests/vllm_dialect_bench.py DIR [--limit 8] [--root CHECKOUT]

Runs `ttc bench` on the first problems of the shipped 500 (weighted-best-of-n@16 and beam@16, seed 0) with the
policy and the PRM each on its vLLM server, and prints per strategy: the requests each server logged (its
access log, by path, so the count is the server's, not ttc's), the wall time and decode calls per problem, the
accuracy, and the prefix-cache hit rate from each server's /metrics. --root runs another checkout's ttc (an
earlier commit, for a before/after).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
LOG_LINE = re.compile(r'"(GET|POST) (/\S*) HTTP/1\.1" (\d+)')


def requests_logged(log: Path) -> collections.Counter:
    found = (f"{m[1]} {m[2]}" for m in LOG_LINE.finditer(log.read_text(errors="replace")))
    return collections.Counter(k for k in found if k != "GET /metrics")  # this script's own


def cache_counters(url: str) -> tuple[float, float]:
    """(prefix-cache hits, queries) in tokens, from vLLM's Prometheus metrics."""
    text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=10).text
    out = []
    for name in ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"):
        out.append(sum(float(x) for x in re.findall(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.M)))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--root", type=Path, default=REPO)
    ap.add_argument("--strategies", default="weighted-best-of-n:16,beam:16")
    args = ap.parse_args()
    info = json.loads((args.dir / "servers.json").read_text())
    logs = {role: args.dir / f"{info[role]['name']}.log" for role in ("policy", "prm")}
    print(f"ttc from {args.root} (commit {git_head(args.root)}), {args.limit} problems, seed 0")
    for item in args.strategies.split(","):
        strategy, budget = item.rsplit(":", 1)
        before = {r: requests_logged(p) for r, p in logs.items()}
        cache0 = {r: cache_counters(info[r]["url"]) for r in logs}
        out = Path(tempfile.mkdtemp()) / "run"
        cmd = [sys.executable, "-c", "from ttc.cli import main; main()", "bench", str(REPO / "ttc/data/arith500.jsonl")]
        cmd += ["--limit", str(args.limit), "--strategies", strategy, "--budgets", budget, "--seed", "0"]
        cmd += ["--backend", "openai", "--base-url", info["policy"]["url"], "--prm-base-url", info["prm"]["url"]]
        cmd += ["--out", str(out), "--concurrency", "1"]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=args.root, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{strategy}@{budget} failed: {r.stderr.strip()[-500:]}")
        time.sleep(1.0)  # the access log is written after the answer
        recs = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines() if x.strip()]
        n = len(recs)
        right = sum(bool(x.get("correct")) for x in recs)
        print(f"\n{strategy}@{budget}: {right}/{n} right, {wall / n:.2f} s per problem (the whole run / {n})")
        print(f"  wall_s in the records: {sum(x['spent']['wall_s'] for x in recs) / n:.2f} s per problem, "
              f"decode calls {sum(x['spent']['decode_calls'] for x in recs) / n:.1f} per problem")  # fmt: skip
        for role, log in logs.items():
            delta = requests_logged(log) - before[role]
            hits, queries = (a - b for a, b in zip(cache_counters(info[role]["url"]), cache0[role]))
            rate = f"{hits / queries:.1%}" if queries else "n/a"
            per = ", ".join(f"{k} {v / n:.1f}" for k, v in sorted(delta.items()))
            print(f"  {role}: {sum(delta.values()) / n:.1f} requests per problem ({per}); prefix-cache hits {rate}")


def git_head(root: Path) -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return r.stdout.strip() or "?"


if __name__ == "__main__":
    main()
