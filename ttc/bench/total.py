"""`ttc bench FILE --total-budget T[,T2...]` (or `--total-tokens`): one bill for the whole file, split four ways
(`ttc.policy.allocate`: uniform, allocator, allocator+online, stream), each a cell of the run: strategy = the
way, budget = the total. Each record holds the problem's samples, its answer (the PRM-weighted vote) and what
it spent; `details.allocation` says how many samples it was planned and got, its level, and why it stopped.

Every way takes a prefix of the same per-problem streams (weighted best-of-N's samples: sample i of a
problem at seed s is the same however many are drawn, `engine.base.shift_seed`), so the cells differ only in
how they split the total. A stream is drawn once, in chunks, as far as the most demanding cell needs, and
kept in DIR/streams.jsonl as it is drawn; each record charges only the samples its cell used (their tokens
exactly; prompt, PRM tokens, time and FLOPs by each draw's share per sample). `--resume` reads the streams
back, so the allocation a killed run was making is made again the same, with no sample drawn twice.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..answers import extract_gold, warm_up
from ..engine.base import shift_seed
from ..errors import UsageError
from ..policy.allocate import MODES, Allocator, Budget, Problem, curves_of, max_per_problem
from ..record import Candidate, Result, Spent
from ..strategies import SolveContext
from ..strategies.base import Meter
from ..strategies.sampling import sample_candidates, score_candidates, select_weighted
from .datasets import read_dataset
from .progress import LINE_INTERVAL_S
from .store import bench_record, config_hash, open_store

STREAMS = "streams.jsonl"
CHUNK = 16  # samples drawn at once when a cell asks for fewer (fewer, larger batches; no cell is charged them)
SHARE_KEYS = ("prompt_tokens", "prm_tokens", "decode_calls", "wall_s", "flops")


def parse_totals(text: str, flag: str) -> list[int]:
    """'3200,6400' -> [3200, 6400]; a usage error for anything but positive integers."""
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise UsageError(f"{flag} takes positive integers separated by commas (e.g. 3200,6400), got '{text}'")
        out.add(int(part))
    return sorted(out)


class Streams:
    """Each problem's samples, drawn lazily from the engine and scored by the PRM, cached and appended to
    DIR/streams.jsonl (one line per draw) so a resumed run reads them back instead of drawing again."""

    def __init__(self, solver, problems, seed: int, params, path: Path, identity: str, resume: bool, say=None):
        self.solver, self.problems, self.seed, self.params = solver, problems, seed, params
        self.say, self.t0, self.last_said = say, time.monotonic(), time.monotonic()
        self.path, self.identity = path, identity
        self.cache: dict[int, list[tuple[Candidate, dict]]] = {}
        self.drawn = self.read_back = 0
        self.engine_s = 0.0
        index = {p.id: i for i, p in enumerate(problems)}
        if resume and path.is_file():
            self._load(index)
        else:
            path.unlink(missing_ok=True)
        self._file = open(path, "a", encoding="utf-8")
        if path.stat().st_size == 0:
            self._file.write(json.dumps({"streams_of": identity}) + "\n")

    def _load(self, index: dict[str, int]) -> None:
        lines = self.path.read_text(encoding="utf-8").split("\n")
        whole = lines[:-1]  # a kill may leave a partial last line: it is dropped and drawn again
        try:
            head = json.loads(whole[0]) if whole else {}
        except ValueError:
            head = {}
        if head.get("streams_of") != self.identity:
            self.path.unlink()
            return
        keep = len(whole[0]) + 1
        for line in whole[1:]:
            try:
                rec = json.loads(line)
                i = index[rec["id"]]
                got = [(Candidate(**c), s) for c, s in zip(rec["candidates"], rec["shares"])]
            except (ValueError, KeyError, TypeError):
                break
            if rec["start"] != len(self.cache.get(i, [])):
                break
            self.cache.setdefault(i, []).extend(got)
            self.read_back += len(got)
            keep += len(line) + 1
        os.truncate(self.path, keep)

    def draw(self, i: int, start: int, k: int) -> list[tuple[Candidate, dict]]:
        have = self.cache.setdefault(i, [])
        if len(have) < start + k:
            self._extend(i, max(start + k - len(have), CHUNK))
        return have[start : start + k]

    def _extend(self, i: int, k: int) -> None:
        have, p = self.cache[i], self.problems[i]
        solver = self.solver
        seed = shift_seed(self.seed, len(have))
        ctx = SolveContext(
            problem=p.text.strip(), preset=solver.preset, policy=solver.policy, budget=k, seed=seed,
            sampling=replace(self.params, seed=seed), prm=solver.prm,
        )  # fmt: skip
        meter = Meter(ctx)
        t0 = time.monotonic()
        cands = sample_candidates(ctx, k)
        score_candidates(ctx, cands)
        self.engine_s += time.monotonic() - t0
        spent = meter.spent(k)
        tokens = sum(c.tokens for c in cands) or 1
        shares = [{key: getattr(spent, key) * c.tokens / tokens for key in SHARE_KEYS} for c in cands]
        line = {"id": p.id, "start": len(have), "candidates": [vars(c) for c in cands], "shares": shares}
        self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._file.flush()
        have.extend(zip(cands, shares))
        self.drawn += k
        now = time.monotonic()
        if self.say is not None and now - self.last_said >= LINE_INTERVAL_S:
            self.last_said = now
            self.say(f"bench: {self.drawn} samples drawn and scored ({self.drawn / (now - self.t0):.1f}/s), "
                     f"problem {i + 1} of {len(self.problems)}", markup=False, highlight=False)  # fmt: skip

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def allocator_for(solver) -> Allocator:
    """The calibrated policy `auto` uses, or the prior (its agreement levels, PRIOR_CURVES)."""
    policy = solver.policy_table
    if policy is None:
        policy = solver.prior_table(True)
    return Allocator(policy, curves_of(policy))


@dataclass
class Cell:
    mode: str
    total: int


def run_total(opts, console=None) -> dict[str, Any]:
    """Run (or resume) the four ways at every total; write samples.jsonl, summaries, the comparison."""
    from ..solve import Solver
    from .paired import check_cells
    from .report import publish
    from .run import grade_answer, model_identity, run_config
    from .summary import summarize
    from .total_report import allocation_summary, print_allocation

    t_start = time.monotonic()
    say = (lambda msg, **kw: None) if (opts.quiet or console is None) else console.print
    unit = opts.total_unit
    totals = sorted(set(opts.total_budgets))
    ways = [m for m in MODES if m in (opts.total_ways or MODES)]
    dataset = read_dataset(opts.data, opts.problem_key, opts.answer_key, opts.id_key, strict=opts.strict)
    problems = dataset.problems[: opts.limit] if opts.limit else dataset.problems
    if not problems:
        raise UsageError(f"{opts.data}: no valid problems")
    if unit == "generations" and totals[0] < len(problems):
        raise UsageError(
            f"--total-budget {totals[0]} is below one generation for each of the {len(problems)} problems; "
            f"give at least {len(problems)}"
        )
    solver = Solver(opts.models)
    params = opts.sampling.apply(solver.preset)
    if unit == "tokens" and totals[0] < len(problems) * params.max_tokens:
        raise UsageError(
            f"--total-tokens {totals[0]} is below one solution's max_tokens ({params.max_tokens}) for each of the "
            f"{len(problems)} problems; give at least {len(problems) * params.max_tokens}"
        )
    alloc = allocator_for(solver)
    config = run_config(opts, dataset, totals, solver, model_identity(opts, solver))
    config["strategies"] = ways
    config["total"] = {
        "unit": unit, "totals": totals, "samples_of": "weighted-best-of-n",
        "allocator": {"wave": alloc.wave, "settle": alloc.settle, "new_answer_weight": alloc.new_weight,
                      "policy": alloc.policy.source},
    }  # fmt: skip
    store = open_store(opts.out, config, resume=opts.resume, force=opts.force)
    known = [(r["strategy"], r["budget"]) for r in store.rows] + [(m, t) for t in totals for m in ways]
    try:
        check_cells(opts.paired, known, "this run (the ways x the totals)")
    except UsageError:
        store.close()
        raise
    identity = config_hash({k: config[k] for k in ("dataset", "seed", "preset", "model", "sampling")})
    streams = None
    try:
        streams = Streams(solver, problems, opts.seed, params, Path(opts.out) / STREAMS, identity, opts.resume, say)
        if streams.read_back:
            say(f"ttc: {streams.read_back} samples read back from {streams.path}", markup=False)
        warm_up()
        golds = [extract_gold(p.gold) for p in problems]
        bench = {"dataset": Path(opts.data).name, "run": config_hash(config),
                 "model_file": config["model"]["file"], "model_bytes": config["model"]["bytes"]}  # fmt: skip
        for total in sorted(totals, reverse=True):  # the largest uniform cell draws the longest chunks first
            for mode in ways:
                missing = [i for i, p in enumerate(problems) if not store.done((p.id, mode, total))]
                if not missing:
                    continue
                budget = Budget(total, unit, params.max_tokens)
                shares: dict[int, list[dict]] = {}

                def draw(i, start, k, shares=shares):
                    got = streams.draw(i, start, k)
                    shares.setdefault(i, []).extend(s for _, s in got)
                    return [c for c, _ in got]

                cap = max_per_problem(budget.samples_left(), len(problems))
                ps = alloc.run(mode, len(problems), draw, budget, cap=cap)
                right = 0
                for i in missing:
                    rec = _record(problems[i], ps[i], shares.get(i, []), mode, total, unit, len(problems), solver,
                                  opts.seed, golds[i], bench, grade_answer)  # fmt: skip
                    store.append(rec)
                    right += rec["correct"]
                say(
                    f"bench: {mode} at total {total} {unit}: spent {budget.spent} ({budget.spent / len(problems):.1f}"
                    f" per problem); {right} of {len(missing)} new records right; {streams.drawn} samples drawn",
                    markup=False, highlight=False,
                )  # fmt: skip
    finally:
        if streams is not None:
            streams.close()
        store.close()
        solver.close()
    summary = summarize(store.rows, list(MODES))  # every cell in the folder, also those of earlier invocations
    summary = {
        "dataset": {"path": str(dataset.path), "sha256": dataset.sha256, "problems_in_file": len(dataset.problems)},
        "total_budgets": totals, "unit": unit, "limit": opts.limit, "seed": opts.seed, "model": config["model"],
        "preset": solver.preset.name, "config_hash": config_hash(config), **summary,
        "overhead": {"samples_drawn": streams.drawn, "samples_read_back": streams.read_back,
                     "engine_wall_s": round(streams.engine_s, 3), "total_wall_s": round(time.monotonic() - t_start, 3)},
    }  # fmt: skip
    summary["allocation"] = allocation_summary(store, sorted({r["budget"] for r in store.rows}), unit)
    out = Path(opts.out)
    publish(out, summary, store.rows, opts.paired, False, dataset.path.name, None, say)
    if console is not None and not opts.quiet:
        print_allocation(console, summary["allocation"])
    if opts.plot:
        from .total_report import plot_totals

        plot_totals(out, summary["allocation"], dataset.path.name, say)
    return summary


def _record(p, prob: Problem, shares, mode, total, unit, n, solver, seed, gold_answer, bench, grade) -> dict:
    answer, details = select_weighted(prob.cands) if prob.cands else (None, {})
    spent = Spent(generations=float(len(prob.cands)), tokens_generated=sum(c.tokens for c in prob.cands))
    for key in SHARE_KEYS:
        value = sum(s[key] for s in shares)
        setattr(spent, key, round(value, 4) if key == "wall_s" else (value if key == "flops" else round(value)))
    details["allocation"] = {**prob.record(), "mode": mode, "total": total, "unit": unit, "problems": n}
    result = Result(
        answer=answer, strategy=mode, budget=total, problem=p.text.strip(), candidates=prob.cands, spent=spent,
        model=solver.policy.info.name, prm=solver.prm.engine.info.name, seed=seed, details=details,
        config={"preset": solver.preset.name, "samples_of": "weighted-best-of-n"},
    )  # fmt: skip
    correct = grade(answer, gold_answer)
    return bench_record(result, id=p.id, gold=p.gold, gold_answer=gold_answer, correct=correct,
                        difficulty=p.difficulty, bench={**bench, "line": p.line, "derived_from": None})  # fmt: skip
