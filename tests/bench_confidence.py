"""How well the confidence scores separate right traces from wrong ones, and what the confidence strategies
would choose, from one sampling pass (not part of the test run: minutes on the built-in pair).

    python tests/bench_confidence.py sample ttc/data/arith500.jsonl --limit 300 --out runs/conf/traces.jsonl
    python tests/bench_confidence.py auroc runs/conf/traces.jsonl
    python tests/bench_confidence.py simulate runs/conf/traces.jsonl --budget 16

`sample` draws --samples traces per problem with token statistics, with the seeds `ttc bench` gives (--seed
for every problem: trace i of a problem is the same in a bench run), and writes one line per problem: gold
answer, and per trace its answer, correctness, tokens and per-token confidence and self-certainty.
`auroc` prints the AUROC of each trace score against correctness: pooled over all traces, and the mean over
problems that have both right and wrong traces (what choosing among one problem's traces depends on), for
default and fixed windows. `simulate` replays majority, deepconf offline / online and self-certainty on the
stored traces (online: the prefixes the watch would have let run; the real strategy draws the same traces),
for grids of their options: tuning them there costs no sampling.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttc.engine.base import SamplingParams, TokenStats  # noqa: E402
from ttc.record import Candidate  # noqa: E402
from ttc.strategies import confidence as conf  # noqa: E402
from ttc.strategies import trace  # noqa: E402
from ttc.strategies.voting import majority_vote, weighted_vote  # noqa: E402


def sample(args) -> None:
    from ttc.answers import extract_answer, extract_gold, is_equivalent
    from ttc.bench.datasets import read_dataset
    from ttc.prompts import problem_prompt
    from ttc.solve import ModelOptions, SamplingOverrides, Solver

    solver = Solver(ModelOptions(preset=args.preset, threads=args.threads))
    eng, preset = solver.policy, solver.preset
    base = SamplingOverrides(max_tokens=args.max_tokens).apply(preset)
    params = SamplingParams(**{**base.__dict__, "seed": args.seed, "stats_top_k": trace.CONFIDENCE_TOP_K})
    problems = read_dataset(args.data).problems[: args.limit]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for n, p in enumerate(problems):
            gold = extract_gold(str(p.gold))
            comps = eng.sample(problem_prompt(preset, eng, p.text), args.samples, params)
            traces = []
            for c in comps:
                a = extract_answer(c.text, preset.answer.format, preset.answer.last_number_fallback)
                traces.append({
                    "answer": a, "correct": bool(a is not None and is_equivalent(a, gold)), "tokens": c.n_generated,
                    "confidence": [round(float(x), 5) for x in c.stats.confidence],
                    "certainty": [round(float(x), 5) for x in c.stats.certainty],
                })  # fmt: skip
            f.write(json.dumps({"id": p.id, "gold": gold, "traces": traces}) + "\n")
            print(f"\r{n + 1}/{len(problems)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def load(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def stats_of(t: dict) -> TokenStats:
    c = np.asarray(t["confidence"], dtype=np.float32)
    return TokenStats(c, np.zeros_like(c), np.asarray(t["certainty"], dtype=np.float32))


def window_of(t: dict, window: float | None) -> int | None:
    """A window in tokens; below 1: that fraction of the trace's length (at most 2048); None: the default."""
    if window is not None and window < 1:
        return max(1, min(trace.MAX_WINDOW, math.ceil(window * t["tokens"])))
    return None if window is None else int(window)


def candidates(problem: dict, window: float | None = None, k: int | None = None) -> list[Candidate]:
    return [
        Candidate(
            answer=t["answer"],
            text="",
            tokens=t["tokens"],
            trace_scores=trace.trace_scores(stats_of(t), window_of(t, window)),
        )  # fmt: skip
        for t in problem["traces"][:k]
    ]


def auroc(args) -> None:
    problems = load(args.traces)
    n_traces = sum(len(p["traces"]) for p in problems)
    right = sum(t["correct"] for p in problems for t in p["traces"])
    lengths = [t["tokens"] for p in problems for t in p["traces"]]
    med = statistics.median(lengths)
    print(f"{len(problems)} problems, {n_traces} traces, {right / n_traces:.1%} right, median length {med}")
    print(f"{'window':>12} " + " ".join(f"{s:>22}" for s in trace.SCORES))
    for window in [None, *args.windows]:
        pooled = {s: ([], []) for s in trace.SCORES}
        within = {s: [] for s in trace.SCORES}
        for p in problems:
            cands = candidates(p, window)
            labels = [t["correct"] for t in p["traces"]]
            for s in trace.SCORES:
                scores = [c.trace_scores[s] for c in cands]
                pooled[s][0].extend(scores)
                pooled[s][1].extend(labels)
                if 0 < sum(labels) < len(labels):
                    within[s].append(trace.auroc(scores, labels))
        name = "auto" if window is None else str(window)
        cells = [f"{trace.auroc(*pooled[s]):.3f} / {statistics.mean(within[s]):.3f}" for s in trace.SCORES]
        print(f"{name:>12} " + " ".join(f"{c:>22}" for c in cells))
    print("(pooled over all traces / mean within problems with both right and wrong traces)")


def simulate_online(p: dict, budget: int, warmup: int, percentile: float, consensus: float, window=None, wave=None):
    """deepconf online replayed on stored traces exactly as the engine runs a wave (every live trace draws a
    token, then the watch sees each in index order): returns (answer, tokens generated)."""
    traces = p["traces"][:budget]
    wave = wave or warmup
    warm = traces[:warmup]
    med = statistics.median(t["tokens"] for t in warm)
    w = window_of({"tokens": med}, window) or trace.window_for(med)
    lowest = [trace.lowest_group(t["confidence"], w) for t in traces]
    threshold = conf._percentile(lowest[:warmup], percentile)
    voters = [(t["answer"], s) for t, s in zip(warm, lowest) if t["answer"] is not None and s >= threshold]
    spent = sum(t["tokens"] for t in warm)
    launched = warmup
    while launched < budget and not conf._settled(voters, consensus):
        active = list(range(launched, min(budget, launched + wave)))
        launched = active[-1] + 1
        made = dict.fromkeys(active, 0)
        sums = dict.fromkeys(active, 0.0)
        stop_all = False
        while active:
            still = []
            for i in active:
                c = traces[i]["confidence"]
                n = made[i] = made[i] + 1
                sums[i] += c[n - 1] - (c[n - 1 - w] if n > w else 0.0)
                go = not stop_all and not (n >= w and sums[i] / w < threshold)
                if n >= len(c):  # its natural end: it votes if its lowest group passes
                    if lowest[i] >= threshold and traces[i]["answer"] is not None:
                        voters.append((traces[i]["answer"], lowest[i]))
                    stop_all = stop_all or conf._settled(voters, consensus)
                elif go:
                    still.append(i)
            active = still
        spent += sum(made.values())
    vote = weighted_vote([a for a, _ in voters], [s for _, s in voters])
    return vote.answer, spent


def simulate(args) -> None:
    from ttc.answers import is_equivalent

    problems = load(args.traces)
    b = args.budget
    rows = []

    def score(name: str, pick) -> None:
        right, tokens = 0, 0
        for p in problems:
            answer, spent = pick(p)
            right += answer is not None and is_equivalent(answer, p["gold"])
            tokens += spent
        rows.append((name, right / len(problems), tokens))

    full = lambda p: sum(t["tokens"] for t in p["traces"][:b])  # noqa: E731
    score(f"majority@{b}", lambda p: (majority_vote([t["answer"] for t in p["traces"][:b]]).answer, full(p)))
    for keep in args.keeps:
        for s in ("lowest-group", "bottom-10", "tail", "mean"):
            for window in (None, *args.windows):

                def pick(p, keep=keep, s=s, window=window):
                    return conf.select_confident(candidates(p, window, b), keep, s)[0], full(p)

                score(f"offline keep={keep} score={s} window={window or 'auto'}", pick)
    for sel in ("borda", "best"):
        score(
            f"self-certainty {sel}",
            lambda p, sel=sel: (conf.select_certain(candidates(p, None, b), sel, 0.5)[0], full(p)),
        )
    for warm in sorted({conf.default_warmup(b), *args.warmups}):
        if warm >= b:
            continue
        for pct in args.percentiles:
            for cons in args.consensus:
                for window in (None, *args.windows):

                    def pick(p, warm=warm, pct=pct, cons=cons, window=window):
                        return simulate_online(p, b, warm, pct, cons, window)

                    score(f"online warmup={warm} percentile={pct} consensus={cons} window={window or 'auto'}", pick)
    base = rows[0][2]
    for name, acc, tokens in sorted(rows, key=lambda r: -r[1])[: args.top]:
        print(f"{acc:7.1%}  tokens {tokens / base:5.2f}x  {name}")
    print(f"{rows[0][1]:7.1%}  tokens  1.00x  {rows[0][0]} ({base} tokens)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("data")
    s.add_argument("--preset", default="tiny-arith")
    s.add_argument("--limit", type=int, default=300)
    s.add_argument("--samples", type=int, default=16)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-tokens", type=int, default=None)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", required=True)
    a = sub.add_parser("auroc")
    a.add_argument("traces")
    a.add_argument("--windows", type=float, nargs="*", default=[2, 4, 8, 16, 32, 0.1, 0.25, 0.5, 0.75])
    m = sub.add_parser("simulate")
    m.add_argument("traces")
    m.add_argument("--budget", type=int, default=16)
    m.add_argument("--windows", type=float, nargs="*", default=[])
    m.add_argument("--warmups", type=int, nargs="*", default=[])
    m.add_argument("--percentiles", type=float, nargs="*", default=[10.0, 50.0, 90.0])
    m.add_argument("--consensus", type=float, nargs="*", default=[0.95])
    m.add_argument("--keeps", type=float, nargs="*", default=[1.0, 0.9, 0.5, 0.25, 0.1])
    m.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    {"sample": sample, "auroc": auroc, "simulate": simulate}[args.cmd](args)


if __name__ == "__main__":
    main()
