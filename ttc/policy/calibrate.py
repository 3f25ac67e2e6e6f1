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
3. For each budget the table is filled per level (each level's best candidate) or pooled (one candidate,
   best over all problems), with or without candidates at smaller budgets, by whichever rule is worth
   most cross-validated (chosen on one half of each level's problems, scored on the other, both ways;
   see `choose`). The policy file keeps each cell's accuracy, its cross-validated accuracy and, per
   budget, the rule and the cross-validated accuracy of every rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..bench.run import BenchOptions, run_bench
from ..bench.store import SAMPLES
from ..errors import UsageError
from ..strategies.base import parse_variant
from .table import ESTIMATORS, LEVELS, Choice, Policy, dump_policy, estimate_value

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
    from ..bench.run import grade_answers
    from ..record import Candidate
    from ..strategies.adaptive import estimate_stats

    out = {}
    for r in records:
        if r["strategy"] == ESTIMATOR and int(r["budget"]) == top and r.get("candidates"):
            cands = [Candidate(**c) for c in r["candidates"]]
            first, rest = cands[:k], cands[k:]
            mean_score, agreement = estimate_stats(first)
            gold = r.get("gold_answer")
            answers = [c.answer for c in rest]
            verdicts = grade_answers(answers, str(gold)) if gold else dict.fromkeys(answers, False)
            out[str(r["id"])] = {
                "mean_score": mean_score,
                "agreement": agreement,
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


RULES = (("pooled", False), ("pooled", True), ("per-level", False), ("per-level", True))  # simplest first


def choose(records: list[dict], difficulty: dict[str, float], budgets: list[int], samples: int) -> Policy:
    """The policy table. At each budget b, one of four rules fills it, whichever is worth most
    cross-validated (picked on one half of every level's problems, scored on the other, both ways):

    - per-level: each level gets the candidate with the best accuracy on its own problems (the paper's
      compute-optimal rule; with few problems per level it can fit noise),
    - pooled: every level gets the one candidate best over all problems,

    each with the candidates at b only, or also those at smaller budgets (then the policy spends less
    than b where more did not help). Ties go to the simpler rule, the smaller budget, then the candidate
    run first (the cheaper)."""
    th = thresholds(list(difficulty.values()))
    probe = Policy(model="", prm=None, samples=samples, thresholds=th, table={})
    level_of = {pid: probe.level(s) for pid, s in difficulty.items()}
    correct: dict[tuple[str, int], dict[str, bool]] = {}
    for r in records:
        pid = str(r["id"])
        if pid in level_of:
            correct.setdefault((r["strategy"], int(r["budget"])), {})[pid] = bool(r.get("correct"))
    strategies = list(dict.fromkeys(s for s, _ in correct))  # in run order: cheaper ones first win ties
    by_level = {lv: sorted(p for p, x in level_of.items() if x == lv) for lv in LEVELS}
    halves = ({lv: ids[0::2] for lv, ids in by_level.items()}, {lv: ids[1::2] for lv, ids in by_level.items()})
    table: dict[int, dict[int, Choice]] = {lv: {} for lv in LEVELS}
    accuracy: dict[int, dict[int, Any]] = {lv: {} for lv in LEVELS}
    selection: dict[int, Any] = {}
    for b in budgets:
        scored = {}
        for rule, smaller in RULES:
            keys = [(s, c) for c in budgets if (c <= b if smaller else c == b) for s in strategies if (s, c) in correct]
            if keys:
                scored[(rule, smaller)] = (keys, _cross_validate(rule, keys, correct, halves))
        if not scored:
            for lv in LEVELS:
                table[lv][b] = Choice("majority")
            continue
        total = {k: _mean(cv.values()) for k, (_, cv) in scored.items()}
        (rule, smaller) = max(total, key=lambda k: total[k])  # the first (simplest) wins ties
        keys, cv = scored[(rule, smaller)]
        picks = _fit(rule, keys, correct, by_level)
        selection[b] = {
            "rule": rule + (" (smaller budgets allowed)" if smaller else ""),
            "cross_validated": {f"{r}{' +smaller' if sm else ''}": round(v, 4) for (r, sm), v in total.items()},
        }
        for lv, ids in by_level.items():
            s, c = picks[lv]
            name, options = parse_variant(s)
            table[lv][b] = Choice(name, options, spend=c if c < b else None)
            accuracy[lv][b] = {
                "chosen": s if c == b else f"{s}@{c}",
                "accuracy": round(_acc(correct[(s, c)], ids), 4),
                "cross_validated": round(cv[lv][0] / cv[lv][1], 4) if cv[lv][1] else None,
                "problems": len(ids),
                "all": {k: round(_acc(correct[(k, x)], ids), 4) for k, x in correct if x == b},
            }
    return Policy(
        model="", prm=None, samples=samples, thresholds=th, table=table, accuracy=accuracy, selection=selection
    )


def _best(keys: list[tuple[str, int]], correct: dict, ids: list[str]) -> tuple[str, int]:
    return max(keys, key=lambda k: _acc(correct[k], ids))  # the first maximum wins ties


def _fit(rule: str, keys: list, correct: dict, train: dict[int, list[str]]) -> dict[int, tuple[str, int]]:
    """The pick per level under `rule`, fitted on `train` (level -> problem ids)."""
    if rule == "pooled":
        best = _best(keys, correct, [p for ids in train.values() for p in ids])
        return {lv: best for lv in train}
    return {lv: _best(keys, correct, ids) for lv, ids in train.items()}


def _cross_validate(rule: str, keys: list, correct: dict, halves: tuple[dict, dict]) -> dict[int, list[float]]:
    """Level -> [right answers, problems] of `rule`'s picks made on one half and scored on the other."""
    out = {lv: [0.0, 0] for lv in halves[0]}
    for train, test in (halves, halves[::-1]):
        picks = _fit(rule, keys, correct, train)
        for lv, ids in test.items():
            out[lv][0] += _acc(correct[picks[lv]], ids) * len(ids)
            out[lv][1] += len(ids)
    return out


def _mean(cells) -> float:
    cells = list(cells)
    n = sum(c[1] for c in cells)
    return sum(c[0] for c in cells) / n if n else 0.0


def _acc(by_id: dict[str, bool], ids: list[str]) -> float:
    have = [by_id[i] for i in ids if i in by_id]
    return sum(have) / len(have) if have else 0.0
