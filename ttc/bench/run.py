"""The bench loop: every problem of a dataset, under every strategy, at every budget; graded, stored, summed up.

For a strategy with `subset` (independent samples, e.g. majority) a problem is solved once at the largest
budget and the smaller budgets are derived from that run's first k candidates (their records carry
`details.subset_of_budget` and `bench.derived_from`), so budgets 1, 2, 4, ..., 256 cost about one run at
256. Other strategies run at each budget. Every record is stored as soon as it is known; a resumed run skips
the (problem, strategy, budget) keys already stored, and derives a missing smaller budget from a stored
larger one without running the model again.

Problems are independent and records are keyed, so the loop can run K problems at once for engines that
serve several requests (`engine.thread_safe`); the in-process llama.cpp engine does not, and runs one.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..answers import extract_gold, is_equivalent, warm_up
from ..engine.models import resolve_model
from ..errors import UsageError
from ..presets import preset_to_dict
from ..record import Result, Spent
from ..solve import ModelOptions, SamplingOverrides, Solver, check_budget
from ..strategies import get_strategy
from ..strategies.base import parse_variant
from .datasets import Dataset, Problem, read_dataset
from .paired import Cell, check_cells
from .progress import Tally, make_reporter
from .report import publish
from .store import Store, bench_record, config_hash, open_store, result_of
from .summary import summarize, write_summaries

MAX_WARNINGS = 10  # skipped dataset lines shown on stderr; all are counted in summary.json
_INTEGER = re.compile(r"\s*[+-]?\d{1,15}\s*\Z")
MAX_EARLY_FAILURES = 3  # identical refusals, before any success, that stop the run (see _Run.solve)


@dataclass
class BenchOptions:
    data: str  # JSONL dataset path
    out: str  # output folder
    strategies: list[str] = field(default_factory=lambda: ["majority"])
    budgets: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    limit: int | None = None  # the first N valid problems
    seed: int = 0  # every problem is solved with this seed, so a record does not depend on run order
    resume: bool = False
    force: bool = False
    strict: bool = False  # a malformed dataset line is fatal
    problem_key: str | None = None
    answer_key: str | None = None
    id_key: str | None = None
    concurrency: int = 1  # problems at once (engines with thread_safe only)
    plot: bool = False
    paired: list[tuple[Cell, Cell]] = field(default_factory=list)  # --paired: cells compared on the same problems
    quiet: bool = False
    models: ModelOptions = field(default_factory=ModelOptions)
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)
    # --total-budget / --total-tokens: one total for the whole file, split four ways (bench/total.py)
    total_budgets: list[int] = field(default_factory=list)
    total_unit: str = "generations"  # or "tokens"
    total_ways: list[str] = field(default_factory=list)  # which of them to run (default: all four)


def grade_answer(answer: str | None, gold_answer: str) -> bool:
    """Is an extracted answer the gold one? Two plain integers are compared as integers (math-verify would
    agree, at about 10 ms a call); anything else goes to `ttc.answers.is_equivalent`."""
    if answer is not None and _INTEGER.match(answer) and _INTEGER.match(gold_answer):
        return int(answer) == int(gold_answer)
    return is_equivalent(answer, gold_answer)


def grade_answers(answers, gold_answer: str) -> dict[str | None, bool]:
    """Each distinct answer among `answers`, graded once (`grade_answer`)."""
    return {a: grade_answer(a, gold_answer) for a in dict.fromkeys(answers)}


def parse_budgets(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16] (sorted, unique); a usage error for anything but positive integers."""
    out = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise UsageError(f"--budgets takes positive integers separated by commas (e.g. 1,4,16), got '{text}'")
        check_budget(int(part), "--budgets")
        out.add(int(part))
    return sorted(out)


def parse_strategies(text: str) -> list[str]:
    names = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not names:
        raise UsageError("--strategies is empty; name at least one (ttc strategies lists them)")
    for name in names:
        get_strategy(name)
    return names


def run_bench(opts: BenchOptions, console=None) -> dict[str, Any]:
    """Run (or resume) a bench; write DIR/samples.jsonl, DIR/summary.{json,csv}; return the summary."""
    if opts.total_budgets:  # one total for the file has its own loop, which uses this module's helpers
        raise UsageError("a --total-budget run goes to ttc.bench.total.run_total, not run_bench")
    t_start = time.monotonic()
    say = (lambda msg, **kw: None) if (opts.quiet or console is None) else console.print
    for name in opts.strategies:
        get_strategy(name)
    if not opts.budgets or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in opts.budgets):
        raise UsageError(f"--budgets must be positive integers, got {opts.budgets}")
    if opts.limit is not None and opts.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {opts.limit}")
    if opts.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {opts.concurrency}")
    budgets = sorted(set(opts.budgets))
    check_cells(opts.paired, [(s, b) for s in opts.strategies for b in budgets], "this run (--strategies x --budgets)")

    dataset = read_dataset(opts.data, opts.problem_key, opts.answer_key, opts.id_key, strict=opts.strict)
    for msg in dataset.skipped[:MAX_WARNINGS]:
        say(f"ttc: warning: {msg}", markup=False, highlight=False, soft_wrap=True)
    if len(dataset.skipped) > MAX_WARNINGS:
        say(f"ttc: warning: ... and {len(dataset.skipped) - MAX_WARNINGS} more malformed lines skipped", markup=False)
    problems = dataset.problems[: opts.limit] if opts.limit else dataset.problems

    solver = Solver(opts.models)
    opts.sampling.apply(solver.preset)  # bad sampling flags fail before anything is written
    check_think_budgets(solver, opts.strategies)
    model_id = model_identity(opts, solver)
    config = run_config(opts, dataset, budgets, solver, model_id)
    store = open_store(opts.out, config, resume=opts.resume, force=opts.force)
    try:
        for note in store.notes:
            say(f"ttc: {note}", markup=False, highlight=False, soft_wrap=True)
        stats = _loop(opts, solver, store, problems, budgets, config, console, say)
    except KeyboardInterrupt:
        store.close()
        write_summaries(Path(opts.out), {"interrupted": True, **summarize(store.rows, opts.strategies)})
        say(f"ttc: {len(store.rows)} records kept in {store.samples_path}; continue with --resume", markup=False)
        raise
    finally:
        store.close()
        solver.close()

    summary = summarize(store.rows, opts.strategies)
    stats["total_wall_s"] = round(time.monotonic() - t_start, 3)
    summary = {
        "dataset": {
            "path": str(dataset.path), "shape": dataset.shape, "sha256": dataset.sha256,
            "problems_in_file": len(dataset.problems), "skipped_lines": len(dataset.skipped),
        },
        "strategies": opts.strategies, "budgets": budgets, "limit": opts.limit, "seed": opts.seed,
        "model": config["model"], "preset": solver.preset.name, "config_hash": config_hash(config),
        "ttc_version": __version__,
        **summary,
        "overhead": stats,
    }  # fmt: skip
    out = Path(opts.out)
    publish(out, summary, store.rows, opts.paired, opts.plot, dataset.path.name, None if opts.quiet else console, say)
    ratio = stats["ratio"]
    say(
        f"bench: {summary['records']} records ({stats['records_run']} run, {stats['records_derived']} derived, "
        f"{stats['records_skipped']} already done, {stats['records_failed']} failed); "
        f"wall {stats['total_wall_s']:.1f}s, loop {stats['loop_wall_s']:.1f}s, engine {stats['engine_wall_s']:.1f}s"
        + (f" (loop/engine {ratio:.3f})" if ratio else "")
        + f"; results in {out}",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    return summary


def check_think_budgets(solver: Solver, strategies: list[str]) -> None:
    """Labels with a think budget (--think-budgets) need a thinking model, and room for each budget: said once,
    before anything is written, rather than once per record."""
    from ..thinking import ThinkOptions
    from .thinkgrid import split_label

    for label in strategies:
        parts = split_label(label)
        if parts is not None:
            think = solver.think_setup(ThinkOptions(budget=parts[1]))
            solver.sampling_for(None, think, 0)


def model_identity(opts: BenchOptions, solver: Solver) -> dict:
    """The model a run's records belong to: the GGUF's name and size, or the served model and its server
    (then nothing is downloaded or read locally)."""
    from ..engine.openai.setup import remote_spec

    ref = opts.models.model or solver.preset.model
    spec = remote_spec(opts.models, solver.preset, "policy", ref)
    if spec is not None:
        return {"file": solver.policy.info.name, "bytes": None, "server": spec.base_url}
    path = resolve_model(ref, base_dir=Path(solver.preset.source).parent if solver.preset.source else None)
    return {"file": path.name, "bytes": path.stat().st_size}


def run_config(opts: BenchOptions, dataset: Dataset, budgets: list[int], solver: Solver, model_id: dict) -> dict:
    """What decides the records of a run; a resume must match it (ttc version, threads and K do not count)."""
    s = opts.sampling
    config = {
        "dataset": {
            "path": str(dataset.path.resolve()), "sha256": dataset.sha256,
            "problem_key": dataset.keys.problem, "answer_key": dataset.keys.answer, "id_key": dataset.keys.id,
        },
        "strategies": list(opts.strategies), "budgets": budgets, "limit": opts.limit, "seed": opts.seed,
        "preset": preset_to_dict(solver.preset),
        "model": model_id,
        "sampling": {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k, "max_tokens": s.max_tokens},
    }  # fmt: skip
    return json.loads(json.dumps(config))  # as config.json will give it back (tuples become lists)


class _Run:
    """One bench invocation's state shared by the workers: store, reporter, counters."""

    def __init__(self, opts, solver, store, budgets, config, reporter):
        self.opts, self.solver, self.store, self.budgets = opts, solver, store, budgets
        self.reporter = reporter
        self.lock = threading.Lock()
        self.engine_wall = 0.0
        self.run_n = self.derived_n = self.error_n = 0
        self.direct: set[tuple[str, int]] = set()  # (strategy, budget) whose failures are written at once
        self.held: dict[tuple[str, int], list] = {}  # failures waiting for a first success at their key
        self.bench = {
            "dataset": Path(opts.data).name, "run": config_hash(config),
            "model_file": config["model"]["file"], "model_bytes": config["model"]["bytes"],
        }  # fmt: skip

    def problem(self, p: Problem) -> None:
        gold_answer = extract_gold(p.gold)
        verdicts: dict[str | None, bool] = {}

        def emit(result: Result, derived_from: int | None) -> None:
            if result.answer not in verdicts:
                verdicts[result.answer] = grade_answer(result.answer, gold_answer)
            correct = verdicts[result.answer]
            rec = bench_record(
                result, id=p.id, gold=p.gold, gold_answer=gold_answer, correct=correct, difficulty=p.difficulty,
                bench={**self.bench, "line": p.line, "derived_from": derived_from},
            )  # fmt: skip
            self.store.append(rec)
            with self.lock:
                s = result.spent
                self.reporter.record((result.strategy, result.budget), correct, s.tokens_generated, s.wall_s)
                if "error" in result.details:
                    self.error_n += 1
                elif derived_from is None:
                    self.engine_wall += s.wall_s
                    self.run_n += 1
                else:
                    self.derived_n += 1

        for name in self.opts.strategies:
            spec = get_strategy(name)
            missing = [b for b in self.budgets if not self.store.done((p.id, name, b))]
            if not missing:
                continue
            subset = spec.subset_for(parse_variant(name)[1])
            if subset is None:
                for b in missing:
                    result = self.solve(p, name, [b], emit)
                    if result is not None:
                        emit(result, None)
                continue
            top = self.budgets[-1]
            if top in missing:
                base = self.solve(p, name, missing, emit)
                if base is None:
                    continue
                emit(base, None)
            else:
                base = result_of(self.store.read((p.id, name, top)))
            for b in sorted((b for b in missing if b != top), reverse=True):
                if "error" in base.details:
                    emit(dataclasses.replace(base, budget=b), None)
                else:
                    emit(subset(base, b), top)

    def solve(self, p: Problem, strategy: str, budgets: list[int], emit) -> Result | None:
        """The result at the largest of `budgets`, or None when the strategy refused this problem (a prompt
        longer than the model's context): then an error record, counted as wrong, goes in for each budget.

        A refusal with the same message for the first MAX_EARLY_FAILURES problems of a strategy and budget,
        before any has run, is about the run, not the problems (a budget below the beam width, a preset
        without what the strategy needs): it is raised, and those records are never written."""
        key = (strategy, max(budgets))
        try:
            result = self.solver.solve(p.text, strategy, key[1], seed=self.opts.seed, sampling=self.opts.sampling)
        except UsageError as e:
            failed = [(emit, self.failure(p, strategy, b, str(e))) for b in budgets]
            with self.lock:
                if key not in self.direct:
                    held = self.held.setdefault(key, [])
                    held.append((e, failed))
                    if len(held) < MAX_EARLY_FAILURES:
                        return None
                    if len({str(x) for x, _ in held}) == 1:
                        raise _refused(key, e) from None
                    failed = [item for _, items in self.held.pop(key) for item in items]
                    self.direct.add(key)  # problem-specific failures: written as they come from now on
            for em, r in failed:
                em(r, None)
            return None
        with self.lock:
            self.direct.add(key)
            held = self.held.pop(key, [])
        for _, items in held:
            for em, r in items:
                em(r, None)
        return result

    def failure(self, p: Problem, strategy: str, budget: int, message: str) -> Result:
        return Result(
            answer=None, strategy=strategy, budget=budget, problem=p.text.strip(), candidates=[], spent=Spent(),
            model=self.bench["model_file"], prm=None, seed=self.opts.seed, details={"error": message},
        )  # fmt: skip

    def finish(self) -> None:
        """Held failures at the end: raised when they all say the same (the run's fault), else written."""
        for key in list(self.held):
            held = self.held.pop(key)
            if len({str(e) for e, _ in held}) == 1:
                raise _refused(key, held[0][0])
            for _, items in held:
                for em, r in items:
                    em(r, None)


def _refused(key: tuple[str, int], e: UsageError) -> UsageError:
    return UsageError(f"{key[0]} at budget {key[1]}: {e}")


def _loop(opts, solver, store: Store, problems, budgets, config, console, say) -> dict:
    pairs = [(s, b) for s in opts.strategies for b in budgets]
    ids, wanted = {p.id for p in problems}, set(pairs)
    done: dict[tuple[str, int], list[bool]] = {}
    for r in store.rows:
        if r["id"] in ids and (r["strategy"], r["budget"]) in wanted:
            done.setdefault((r["strategy"], r["budget"]), []).append(r["correct"])
    todo = [p for p in problems if any(not store.done((p.id, s, b)) for s, b in pairs)]
    skipped = sum(len(v) for v in done.values())

    t_load = time.monotonic()
    engine = solver.policy if todo else None
    if engine is not None:
        from ..prompts import problem_prompt

        problem_prompt(solver.preset, engine, "1+1")  # a preset whose prompt cannot be built fails here, once
        warm_up()  # math-verify's one-time import, outside the timed loop
    load_s = time.monotonic() - t_load
    k = opts.concurrency
    if k > 1 and engine is not None and not getattr(engine, "thread_safe", False):
        say(f"ttc: note: --concurrency {k} ignored: the llama.cpp engine runs one request at a time", markup=False)
        k = 1

    reporter = make_reporter(Tally(pairs, len(problems), done), console, opts.quiet)
    run = _Run(opts, solver, store, budgets, config, reporter)
    t0 = time.monotonic()
    with reporter:
        if k == 1:
            for p in todo:
                run.problem(p)
        else:
            pool = ThreadPoolExecutor(max_workers=k, thread_name_prefix="bench")
            try:
                futures = [pool.submit(run.problem, p) for p in todo]
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            finally:  # on an error or Ctrl-C: let running problems finish writing, start no more
                pool.shutdown(wait=True, cancel_futures=True)
            for f in finished:
                if f.exception() is not None:
                    raise f.exception()
        run.finish()
    loop_s = time.monotonic() - t0
    return {
        "load_s": round(load_s, 3),
        "loop_wall_s": round(loop_s, 3),
        "engine_wall_s": round(run.engine_wall, 3),
        "ratio": round(loop_s / run.engine_wall, 4) if run.engine_wall > 0 else None,
        "records_run": run.run_n,
        "records_derived": run.derived_n,
        "records_failed": run.error_n,
        "records_skipped": skipped,
        "concurrency": k,
    }
