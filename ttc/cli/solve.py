"""`ttc solve` and `ttc compare`: one problem (or one per stdin line) within a budget, and several strategies
side by side on one problem with what each spent."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..errors import UsageError
from .app import app, err
from .options import (
    BackendOpt,
    BaseUrlOpt,
    GpuOpt,
    JsonOpt,
    ModelOpt,
    OptOpt,
    PresetOpt,
    PrmBaseUrlOpt,
    QuietOpt,
    SeedOpt,
    ServedModelOpt,
    ThinkBudgetOpt,
    ThinkingOpt,
    ThinkMessageOpt,
    ThinkMinOpt,
    ThreadsOpt,
    VerboseOpt,
    parse_list,
    parse_options,
    read_problems,
    think_options,
)

if TYPE_CHECKING:
    from ..record import Result
    from ..solve import SamplingOverrides, Solver
    from ..thinking import ThinkOptions


@app.command(
    epilog='Examples:\n\n  ttc solve "37+48-19"\n\n  ttc solve "12+7" --strategy majority --budget 16 --json\n\n'
    "  printf '1+2\\n3+4\\n' | ttc solve - --budget 8"
)
def solve(
    problem: Annotated[
        str | None, typer.Argument(help="The problem; '-' or nothing reads one per line from stdin.")
    ] = None,
    budget: Annotated[
        int, typer.Option("--budget", "-b", help="Generation-equivalents to spend (the paper's N).")
    ] = 16,
    strategy: Annotated[
        str | None,
        typer.Option("--strategy", "-s", help="Strategy (ttc strategies); default auto with a policy, else majority."),
    ] = None,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = 0,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (default: the preset's).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Tokens per solution (default: the preset's).")] = None,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    opt: OptOpt = None,
    backend: BackendOpt = None,
    base_url: BaseUrlOpt = None,
    prm_base_url: PrmBaseUrlOpt = None,
    served_model: ServedModelOpt = None,
    think_budget: ThinkBudgetOpt = None,
    think_min: ThinkMinOpt = None,
    think_message: ThinkMessageOpt = None,
    thinking: ThinkingOpt = None,
    total_budget: Annotated[
        int | None,
        typer.Option(
            "--total-budget",
            help="With '-': one total in generations for all the lines, split by predicted difficulty and "
            "confidence, each line answered before the next is looked at (see ttc bench --total-budget).",
        ),
    ] = None,
    total_tokens: Annotated[
        int | None, typer.Option("--total-tokens", help="As --total-budget, in policy tokens generated.")
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Solve a problem within a budget; print the answer alone on stdout."""
    from ..solve import ModelOptions, SamplingOverrides, Solver, check_budget
    from ..strategies import get_strategy

    check_budget(budget)
    if strategy is not None:
        get_strategy(strategy)
    options = parse_options(opt)
    think = think_options(think_budget, think_min, think_message, thinking)
    total, unit = _total(total_budget, total_tokens, problem, strategy, options)
    if total is not None and think.given():
        raise UsageError("--total-budget and the thinking flags do not go together yet: the allocator runs without")
    problems = read_problems(problem)
    solver = Solver(
        ModelOptions(
            preset, model, n_gpu_layers, threads, verbose, backend, base_url, served_model, prm_base_url=prm_base_url
        )
    )
    sampling = SamplingOverrides(temperature=temperature, max_tokens=max_tokens)
    if total is not None:
        from ..bench.stdin_total import solve_total

        say = (lambda m: None) if quiet else (lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True))
        solve_total(solver, problems, total, unit, seed, sampling, json_out, say)
        solver.close()
        return
    strategy = strategy or solver.default_strategy
    show = err.is_terminal and not quiet and not json_out
    for text in problems:
        if not text.strip():
            print("", flush=True)  # keep one answer line per input line
            continue
        if show:
            with err.status(f"[{strategy}] budget {budget}: {text[:60]}"):
                result = solver.solve(
                    text, strategy, budget, seed=seed, sampling=sampling, options=options, thinking=think
                )
        else:
            result = solver.solve(text, strategy, budget, seed=seed, sampling=sampling, options=options, thinking=think)
        if not quiet:
            for note in result.details.get("notes", []):
                err.print(f"ttc: note: {note}", markup=False)
        if json_out:
            print(json.dumps(result.to_dict(), ensure_ascii=False), flush=True)
        else:
            print("" if result.answer is None else result.answer.replace("\n", " "), flush=True)
        if not quiet and result.answer is None:
            err.print(f"ttc: no answer found for {text[:60]!r}", style="yellow")
        elif not quiet and not json_out and show:
            s = result.spent
            thought = f" ({s.thinking_tokens} thinking, {s.forced_cuts} cut)" if s.thinking_tokens else ""
            err.print(
                f"[dim]{result.strategy}: {s.generations:g} generations, {s.tokens_generated} tokens{thought}, "
                f"{s.wall_s:.2f}s[/dim]"
            )
    solver.close()


def _total(total_budget, total_tokens, problem, strategy, options) -> tuple[int | None, str]:
    """--total-budget / --total-tokens: the total and its unit, or usage errors for what does not go with it."""
    from ..errors import UsageError

    if total_budget is None and total_tokens is None:
        return None, "generations"
    if total_budget is not None and total_tokens is not None:
        raise UsageError("--total-budget and --total-tokens do not go together: give the total in one unit")
    flag = "--total-budget" if total_budget is not None else "--total-tokens"
    total = total_budget if total_budget is not None else total_tokens
    if total < 1:
        raise UsageError(f"{flag} must be a positive integer, got {total}")
    if problem not in (None, "-"):
        raise UsageError(f"{flag} is for many problems: pass '-' and one problem per line on stdin")
    if strategy is not None or options:
        raise UsageError(f"{flag} chooses the spend itself (PRM-weighted samples): drop --strategy and --opt")
    return total, "generations" if total_budget is not None else "tokens"


@app.command(epilog='Example:\n\n  ttc compare "37+48-19" --budget 16 --answer 66 --strategies greedy,majority,beam')
def compare(
    problem: Annotated[str, typer.Argument(help="The problem.")],
    budget: Annotated[int, typer.Option("--budget", "-b", help="Generation-equivalents per strategy.")] = 16,
    answer: Annotated[str | None, typer.Option("--answer", help="Gold answer: adds a correct column.")] = None,
    strategies: Annotated[
        str, typer.Option("--strategies", help="Comma-separated strategies.")
    ] = "greedy,majority,best-of-n,weighted-best-of-n,beam",
    preset: PresetOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = 0,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (default: the preset's).")] = None,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    opt: OptOpt = None,
    backend: BackendOpt = None,
    base_url: BaseUrlOpt = None,
    prm_base_url: PrmBaseUrlOpt = None,
    served_model: ServedModelOpt = None,
    think_budget: ThinkBudgetOpt = None,
    think_min: ThinkMinOpt = None,
    think_message: ThinkMessageOpt = None,
    thinking: ThinkingOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run strategies side by side on one problem: a table on stderr, --json records on stdout."""
    from ..solve import ModelOptions, SamplingOverrides, Solver, check_budget, check_problem

    check_problem(problem)
    check_budget(budget)
    names = parse_list(strategies, "strategies")
    think = think_options(think_budget, think_min, think_message, thinking)
    solver = Solver(
        ModelOptions(
            preset, model, n_gpu_layers, threads, verbose, backend, base_url, served_model, prm_base_url=prm_base_url
        )
    )
    rows = run_compare(
        solver,
        problem,
        names,
        budget,
        seed,
        SamplingOverrides(temperature=temperature),
        parse_options(opt),
        answer,
        err,
        think,
    )
    if json_out:
        print(json.dumps([{**r.to_dict(), "correct": ok} for r, ok in rows], ensure_ascii=False))
    solver.close()


def run_compare(
    solver: Solver,
    problem: str,
    strategies: list[str],
    budget: int,
    seed: int,
    sampling: SamplingOverrides,
    options: dict,
    gold: str | None,
    console: Console | None,
    thinking: ThinkOptions | None = None,
) -> list[tuple[Result, bool | None]]:
    from ..answers import extract_gold, is_equivalent
    from ..strategies import get_strategy

    for name in strategies:
        get_strategy(name)
    gold_answer = extract_gold(gold) if gold is not None else None
    rows = []
    for name in strategies:
        if console is not None and console.is_terminal:
            with console.status(f"{name} at budget {budget}"):
                result = solver.solve(
                    problem, name, budget, seed=seed, sampling=sampling, options=options, thinking=thinking
                )
        else:
            result = solver.solve(
                problem, name, budget, seed=seed, sampling=sampling, options=options, thinking=thinking
            )
        correct = None if gold_answer is None else is_equivalent(result.answer, gold_answer)
        rows.append((result, correct))
    if console is not None:
        console.print(table(rows, budget, gold_answer))
    return rows


def table(rows: list[tuple[Result, bool | None]], budget: int, gold: str | None) -> Table:
    t = Table(title=f"budget {budget}" + (f", gold {gold}" if gold is not None else ""))
    for col in ("strategy", "answer", "correct", "score / votes", "generations", "gen tokens", "PRM tokens", "wall s"):
        t.add_column(col, justify="left" if col in ("strategy", "answer") else "right")
    for r, ok in rows:
        d = r.details
        if "votes" in d:
            support = f"{d['votes'].get(r.answer, 0)}/{len(r.candidates)}" if r.answer is not None else "-"
        elif "weights" in d and r.answer is not None:
            support = f"{d['weights'].get(r.answer, 0):.2f}"
        elif "best_score" in d:
            support = f"{d['best_score']:.3f}"
        else:
            support = "-"
        mark = "" if ok is None else ("yes" if ok else "no")
        s = r.spent
        t.add_row(
            r.strategy, str(r.answer), mark, support, f"{s.generations:g}", str(s.tokens_generated), str(s.prm_tokens),
            f"{s.wall_s:.2f}",
        )  # fmt: skip
    return t
