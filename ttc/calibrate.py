"""`ttc calibrate`: learn a compute-optimal policy (which strategy at which difficulty and budget) from a
labeled dataset, as in Snell et al. 2024, section 3.

1. Benches (resumable, with live progress) over the dataset: the sampled strategies at every budget (one
   run at the largest budget, smaller ones derived from it) in RUN_DIR/sampled, and the search strategies
   and revisions at the budgets they fit (`--search-budgets`, default all), one bench per smallest budget
   they can run at, in RUN_DIR/search-fromK.
2. Each problem's predicted difficulty comes from its first `samples` scored samples (those of
   weighted-best-of-n at the largest budget: what `auto` draws at run time): their mean final PRM score
   (the paper's estimate), their answer agreement, or the mean of the two. The statistic that ranks the
   problems best by their true pass rate (Spearman's rho against the share of right answers among the
   remaining samples) is the policy's estimator, and the thresholds between the 5 levels are its
   quintiles, learned here.
3. For each (level, budget) the (strategy, options) with the best accuracy is chosen; its accuracy is
   also cross-validated (choose on one half of the level's problems, score on the other, both ways), so
   the policy file reports what the choice is worth on problems it was not chosen on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .bench.run import BenchOptions, run_bench
from .bench.store import SAMPLES
from .errors import UsageError
from .policy import ESTIMATORS, LEVELS, Choice, Policy, dump_policy, estimate_value
from .strategies.base import parse_variant

SAMPLED = ["majority", "best-of-n", "weighted-best-of-n"]
SEARCH = ["beam:width=4", "beam:width=2", "dvts:width=4", "revise:sequential=4", "revise:sequential=2"]
ESTIMATOR = "weighted-best-of-n"  # its scored samples give the difficulty estimate


@dataclass
class CalibrateOptions:
    data: str
    out: str  # the policy YAML to write
    budgets: list[int]
    run_dir: str  # where the two benches keep their results (resumable)
    samples: int = 4  # difficulty-estimation samples (auto spends them from its budget)
    sampled: list[str] = field(default_factory=lambda: list(SAMPLED))
    search: list[str] = field(default_factory=lambda: list(SEARCH))
    search_budgets: list[int] | None = None  # the budgets to run the search strategies at; None = all
    bench: BenchOptions | None = None  # template: model flags, seed, limit, resume, force, quiet ...


def min_budget(label: str) -> int:
    name, options = parse_variant(label)
    return int(options.get("width", 4)) if name in ("beam", "dvts", "lookahead") else 1


def run_calibrate(opts: CalibrateOptions, console=None) -> Policy:
    if opts.samples < 1:
        raise UsageError(f"--samples must be at least 1, got {opts.samples}")
    base = opts.bench or BenchOptions(data=opts.data, out="")
    top = max(opts.budgets)
    runs = [(Path(opts.run_dir) / "sampled", opts.sampled, opts.budgets)]
    wanted = opts.budgets if opts.search_budgets is None else opts.search_budgets
    if set(wanted) - set(opts.budgets):
        raise UsageError(f"--search-budgets {sorted(set(wanted) - set(opts.budgets))[0]} is not one of --budgets")
    # One bench per smallest budget the search candidates run at (a beam of width 4 cannot run at 2).
    for floor in sorted({min_budget(s) for s in opts.search}):
        group = [s for s in opts.search if min_budget(s) == floor]
        fits = [b for b in wanted if b >= floor]
        if fits:
            runs.append((Path(opts.run_dir) / f"search-from{floor}", group, fits))
    for out, strategies, budgets in runs:
        run_bench(replace(base, data=opts.data, out=str(out), strategies=strategies, budgets=budgets), console)
    records = [r for out, _, _ in runs for r in _read(out / SAMPLES)]
    if not records:
        raise UsageError(f"{opts.data}: no problems to calibrate on")
    if all(not r.get("gold_answer") for r in records):
        raise UsageError(f"{opts.data}: the calibration data has no answers to grade against")
    stats = _difficulty(records, top, opts.samples)
    estimator, report = pick_estimator(stats)
    difficulty = {pid: estimate_value(estimator, st["mean_score"], st["agreement"]) for pid, st in stats.items()}
    policy = choose(records, difficulty, opts.budgets, opts.samples)
    policy.estimator, policy.difficulty = estimator, report
    policy.model = records[0]["model"]
    policy.prm = next((r["prm"] for r in records if r.get("prm")), None)
    dump_policy(
        policy, opts.out, made_with={"data": str(opts.data), "problems": len(difficulty), "run_dir": opts.run_dir}
    )
    policy.source = str(opts.out)
    return policy


def _read(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def _difficulty(records: list[dict], top: int, k: int) -> dict[str, dict[str, float]]:
    """Problem id -> the estimator's first k samples' mean aggregated PRM score and answer agreement, and
    the pass rate of its other samples (the truth the estimate is checked against)."""
    from .bench.run import grade_answer
    from .record import Candidate
    from .strategies.sampling import select_majority

    out = {}
    for r in records:
        if r["strategy"] == ESTIMATOR and int(r["budget"]) == top and r.get("candidates"):
            cands = [Candidate(**c) for c in r["candidates"]]
            first, rest = cands[:k], cands[k:]
            _, votes = select_majority(first)
            verdicts: dict[str | None, bool] = {}
            for c in rest:
                if c.answer not in verdicts:
                    verdicts[c.answer] = bool(r.get("gold_answer")) and grade_answer(c.answer, str(r["gold_answer"]))
            out[str(r["id"])] = {
                "mean_score": sum(c.score or 0.0 for c in first) / len(first),
                "agreement": max(votes["votes"].values(), default=0) / len(first),
                "pass_rate": sum(verdicts[c.answer] for c in rest) / len(rest) if rest else None,
            }
    if not out:
        raise UsageError(f"calibration needs {ESTIMATOR} at budget {top} to estimate difficulty; none ran")
    return out


def pick_estimator(stats: dict[str, dict[str, float]]) -> tuple[str, dict]:
    """The statistic whose ranking of the problems best follows their true pass rate (Spearman's rho),
    and the rho of each. Without pass rates (top budget = samples) it is the paper's mean score."""
    from .difficulty import spearman

    have = [st for st in stats.values() if st["pass_rate"] is not None]
    rho = {}
    for est in ESTIMATORS:
        v = spearman([estimate_value(est, st["mean_score"], st["agreement"]) for st in have],
                     [st["pass_rate"] for st in have]) if have else None  # fmt: skip
        rho[est] = None if v is None else round(v, 4)
    ranked = [e for e in ESTIMATORS if rho[e] is not None]
    chosen = max(ranked, key=lambda e: rho[e]) if ranked else "mean_score"
    return chosen, {"estimator": chosen, "spearman_vs_pass_rate": rho, "problems": len(have)}


def thresholds(values: list[float]) -> list[float]:
    """The 4 quintile boundaries, descending (level 1 holds the highest scores)."""
    v = sorted(values, reverse=True)
    n = len(v)
    return [v[min(n - 1, max(0, round(n * q) - 1))] for q in (0.2, 0.4, 0.6, 0.8)]


def choose(records: list[dict], difficulty: dict[str, float], budgets: list[int], samples: int) -> Policy:
    """The policy: for each (level, budget b) the (strategy, budget b' <= b) with the best accuracy on the
    level's problems; ties go to the smaller b', then to the candidate run first (the cheaper). Spending
    less than b is allowed: where more compute does not help (measured), the policy does not spend it."""
    th = thresholds(list(difficulty.values()))
    probe = Policy(model="", prm=None, samples=samples, thresholds=th, table={})
    level_of = {pid: probe.level(s) for pid, s in difficulty.items()}
    correct: dict[tuple[str, int], dict[str, bool]] = {}
    for r in records:
        pid = str(r["id"])
        if pid in level_of:
            correct.setdefault((r["strategy"], int(r["budget"])), {})[pid] = bool(r.get("correct"))
    strategies = list(dict.fromkeys(s for s, _ in correct))  # in run order: cheaper ones first win ties
    table: dict[int, dict[int, Choice]] = {}
    accuracy: dict[int, dict[int, Any]] = {}
    for level in LEVELS:
        ids = sorted(p for p, lv in level_of.items() if lv == level)
        table[level], accuracy[level] = {}, {}
        for b in budgets:
            keys = [(s, c) for c in budgets if c <= b for s in strategies if (s, c) in correct]

            def best_of(on: list[str], keys=keys) -> tuple[str, int] | None:
                return max(keys, key=lambda k: _acc(correct[k], on)) if keys else None  # first max wins ties

            best = best_of(ids) or ("majority", b)
            halves = (ids[0::2], ids[1::2])
            cv = []
            for pick, score in (halves, halves[::-1]):
                if pick and score and keys:
                    cv.append((_acc(correct[best_of(pick)], score), len(score)))
            name, options = parse_variant(best[0])
            table[level][b] = Choice(name, options, spend=best[1] if best[1] < b else None)
            accuracy[level][b] = {
                "chosen": best[0] if best[1] == b else f"{best[0]}@{best[1]}",
                "accuracy": round(_acc(correct.get(best, {}), ids), 4),
                "cross_validated": round(sum(a * n for a, n in cv) / max(1, sum(n for _, n in cv)), 4) if cv else None,
                "problems": len(ids),
                "all": {s: round(_acc(correct[(s, c)], ids), 4) for s, c in keys if c == b},
            }
    return Policy(model="", prm=None, samples=samples, thresholds=th, table=table, accuracy=accuracy)


def _acc(by_id: dict[str, bool], ids: list[str]) -> float:
    have = [by_id[i] for i in ids if i in by_id]
    return sum(have) / len(have) if have else 0.0
