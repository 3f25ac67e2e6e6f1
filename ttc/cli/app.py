"""The `ttc` command line: thin Typer commands that parse, call one function and print.

stdout carries data (answers, or JSON with --json); everything for people goes to stderr. One error
boundary (`main`) turns known failures into a one-line message and an exit code: 2 for usage, 1 for
runtime; TTC_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from .. import __version__
from ..errors import TTCError, UsageError

app = typer.Typer(
    name="ttc",
    help="Budgeted reasoning: spend a fixed amount of inference compute on a problem for a better answer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
presets_app = typer.Typer(help="List and show presets (model + PRM + prompt format + policy).", no_args_is_help=True)
app.add_typer(presets_app, name="presets")

# Piped or logged stderr gets a wide console, so tables keep their columns on one line.
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

# Options shared across commands.
PresetOpt = Annotated[str | None, typer.Option("--preset", "-p", help="Preset name or YAML path.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="GGUF path or hf://owner/repo/file.gguf.")]
GpuOpt = Annotated[
    int | None, typer.Option("--n-gpu-layers", help="Layers to offload (default: all when the build has a GPU).")
]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="CPU threads (default: physical cores).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same answer.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the full record as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Nothing on stderr but errors.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", help="Show llama.cpp's own log on stderr.")]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="llama: in-process llama.cpp (default); openai: an OpenAI-compatible server (vLLM, SGLang, llama-server).",
    ),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="The server for --backend openai, e.g. http://127.0.0.1:8000/v1 (key: TTC_API_KEY or OPENAI_API_KEY).",
    ),
]
ServedModelOpt = Annotated[
    str | None, typer.Option("--served-model", help="The model's name on the server (default: its only model).")
]
OptOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--opt", help="Strategy option key=value, repeatable (width=4, lookahead=2, sequential=4, select=best)."
    ),
]


def _version(value: bool) -> None:
    if value:
        print(f"ttc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """ttc: turn a compute budget into accuracy (Snell et al. 2024) on llama.cpp."""


def _read_problems(problem: str | None) -> list[str]:
    """The problem argument, or one problem per line from stdin for `-` or no argument."""
    if problem is not None and problem != "-":
        from ..solve import check_problem

        check_problem(problem)
        return [problem]
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("no problem given: pass it as an argument, or pipe one problem per line into stdin")
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"stdin is not valid UTF-8 (byte {e.start}); pass text in UTF-8") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise UsageError("stdin holds no problem (it is empty or only whitespace)")
    return lines


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
    served_model: ServedModelOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Solve a problem within a budget; print the answer alone on stdout."""
    from .compare import parse_options
    from ..solve import ModelOptions, SamplingOverrides, Solver, check_budget
    from ..strategies import get_strategy

    check_budget(budget)
    if strategy is not None:
        get_strategy(strategy)
    options = parse_options(opt)
    problems = _read_problems(problem)
    solver = Solver(ModelOptions(preset, model, n_gpu_layers, threads, verbose, backend, base_url, served_model))
    strategy = strategy or solver.default_strategy
    sampling = SamplingOverrides(temperature=temperature, max_tokens=max_tokens)
    show = err.is_terminal and not quiet and not json_out
    for text in problems:
        if not text.strip():
            print("", flush=True)  # keep one answer line per input line
            continue
        if show:
            with err.status(f"[{strategy}] budget {budget}: {text[:60]}"):
                result = solver.solve(text, strategy, budget, seed=seed, sampling=sampling, options=options)
        else:
            result = solver.solve(text, strategy, budget, seed=seed, sampling=sampling, options=options)
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
            err.print(
                f"[dim]{result.strategy}: {s.generations:g} generations, {s.tokens_generated} tokens, "
                f"{s.wall_s:.2f}s[/dim]"
            )
    solver.close()


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
    served_model: ServedModelOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run strategies side by side on one problem: a table on stderr, --json records on stdout."""
    from .compare import parse_list, parse_options, run_compare
    from ..solve import ModelOptions, SamplingOverrides, Solver, check_budget, check_problem

    check_problem(problem)
    check_budget(budget)
    names = parse_list(strategies, "strategies")
    solver = Solver(ModelOptions(preset, model, n_gpu_layers, threads, verbose, backend, base_url, served_model))
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
    )
    if json_out:
        print(json.dumps([{**r.to_dict(), "correct": ok} for r, ok in rows], ensure_ascii=False))
    solver.close()


# `ttc difficulty` and `ttc calibrate` live in cli/policy.py; importing it here registers them in this order.
from . import policy  # noqa: E402, F401


@app.command()
def grade(
    pred: Annotated[str | None, typer.Argument(help="Predicted answer or a full solution.")] = None,
    gold: Annotated[str | None, typer.Argument(help="Gold answer (or a solution holding it).")] = None,
    jsonl: Annotated[str | None, typer.Option("--jsonl", help="Grade every line of a JSONL file.")] = None,
    pred_key: Annotated[str, typer.Option("--pred-key", help="Key of the prediction in each line.")] = "pred",
    gold_key: Annotated[str, typer.Option("--gold-key", help="Key of the gold answer in each line.")] = "answer",
    json_out: JsonOpt = False,
) -> None:
    """Is PRED equivalent to GOLD? Exit 0 when it is, 1 when not. With --jsonl, print accuracy."""
    from ..answers import grade as grade_one
    from ..answers import grade_jsonl

    if jsonl is not None:
        if pred is not None or gold is not None:
            raise UsageError("give either PRED GOLD or --jsonl FILE, not both")
        summary = grade_jsonl(jsonl, pred_key, gold_key)
        if json_out:
            print(json.dumps(summary))
        else:
            print(f"{summary['accuracy']:.4f}")
            err.print(f"{summary['correct']}/{summary['n']} correct")
        return
    if pred is None or gold is None:
        raise UsageError("ttc grade needs PRED and GOLD (or --jsonl FILE)")
    result = grade_one(pred, gold)
    if json_out:
        print(json.dumps({"pred": result.pred_answer, "gold": result.gold_answer, "correct": result.correct}))
    else:
        print("equivalent" if result.correct else "not equivalent")
    raise typer.Exit(0 if result.correct else 1)


@app.command()
def speed(
    model: ModelOpt = None,
    preset: PresetOpt = None,
    n: Annotated[str, typer.Option("--n", help="Comma-separated numbers of parallel samples.")] = "1,4,16,64",
    tokens: Annotated[int, typer.Option("--tokens", help="Tokens generated per sample.")] = 64,
    threads: ThreadsOpt = None,
    n_gpu_layers: GpuOpt = None,
    random: Annotated[
        bool, typer.Option("--random", help="Measure on a random 76 M-parameter f16 model (batched-bench's shape).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Generation tokens/s of ttc's batched sampler vs a sequential create_completion loop, and their ratio."""
    from ..engine.llama.speed import parse_ns, run_speed

    rows = run_speed(
        model,
        preset,
        parse_ns(n),
        tokens,
        threads,
        n_gpu_layers,
        random_model=random,
        progress=None if json_out else err,
    )
    if json_out:
        print(json.dumps(rows))


@app.command(
    epilog="Examples:\n\n  ttc bench ttc/data/arith500.jsonl --strategies majority --budgets 1,2,4,8,16 --limit 50\n\n"
    "  ttc bench math500.jsonl --limit 20 --out runs/math --plot\n\n"
    "  ttc bench math500.jsonl --limit 20 --out runs/math --resume"
)
def bench(
    data: Annotated[str, typer.Argument(help="JSONL dataset: MATH-500, GSM8K, arith, or any with --*-key.")],
    strategies: Annotated[str, typer.Option("--strategies", "-s", help="Comma-separated strategies.")] = "majority",
    budgets: Annotated[str, typer.Option("--budgets", "-b", help="Comma-separated budgets.")] = "1,4,16,64",
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Results folder (default: bench-runs/DATASET_NAME).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N valid problems.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out, skipping what is done.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Start over in a non-empty --out, or resume with a changed config.")
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="A malformed dataset line is fatal.")] = False,
    problem_key: Annotated[str | None, typer.Option("--problem-key", help="Key of the problem text.")] = None,
    answer_key: Annotated[str | None, typer.Option("--answer-key", help="Key of the gold answer.")] = None,
    id_key: Annotated[str | None, typer.Option("--id-key", help="Key of the id (default: the line number).")] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="Problems at once, for backends that serve several requests.")
    ] = 1,
    plot: Annotated[bool, typer.Option("--plot", help="Write DIR/accuracy_vs_budget.png (matplotlib).")] = False,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = 0,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (default: the preset's).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Tokens per solution (default: the preset's).")] = None,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    backend: BackendOpt = None,
    base_url: BaseUrlOpt = None,
    served_model: ServedModelOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print summary.json on stdout at the end.")] = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run a dataset under strategies x budgets: live progress, resumable DIR/samples.jsonl, summaries, plot."""
    from pathlib import Path

    from ..bench import BenchOptions, parse_budgets, parse_strategies, run_bench
    from ..solve import ModelOptions, SamplingOverrides

    opts = BenchOptions(
        data=data,
        out=out or str(Path("bench-runs") / Path(data).stem),
        strategies=parse_strategies(strategies),
        budgets=parse_budgets(budgets),
        limit=limit,
        seed=seed,
        resume=resume,
        force=force,
        strict=strict,
        problem_key=problem_key,
        answer_key=answer_key,
        id_key=id_key,
        concurrency=concurrency,
        plot=plot,
        quiet=quiet,
        models=ModelOptions(
            preset, model, n_gpu_layers, threads, verbose, backend=backend, base_url=base_url, served_model=served_model
        ),
        sampling=SamplingOverrides(temperature=temperature, max_tokens=max_tokens),
    )
    summary = run_bench(opts, console=err)
    if json_out:
        print(json.dumps(summary, ensure_ascii=False))


@app.command("strategies")
def strategies_cmd() -> None:
    """List the strategies."""
    from ..strategies import REGISTRY

    for spec in REGISTRY.values():
        print(f"{spec.name}\t{spec.summary}")


@presets_app.command("list")
def presets_list() -> None:
    """Names and descriptions of the presets found."""
    from ..presets import list_presets, load_preset

    for name in list_presets():
        print(f"{name}\t{load_preset(name).description}")


@presets_app.command("show")
def presets_show(name: Annotated[str, typer.Argument(help="Preset name or YAML path.")]) -> None:
    """The preset, validated, with defaults filled in (YAML on stdout)."""
    import yaml

    from ..presets import load_preset, preset_to_dict

    p = load_preset(name)
    print(f"# {p.source}")
    print(yaml.safe_dump(preset_to_dict(p), sort_keys=False, allow_unicode=True), end="")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app behind one error boundary."""
    debug = os.environ.get("TTC_DEBUG") == "1"
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="ttc", standalone_mode=False)
        return rv if isinstance(rv, int) else 0  # without standalone mode an Exit's code is returned
    except TTCError as e:
        if debug:
            raise
        err.print(f"ttc: error: {e}", markup=False, highlight=False, soft_wrap=True)
        return e.exit_code
    except (typer.Exit, typer.Abort, KeyboardInterrupt, Exception) as e:
        code = _parser_exit(e, debug)
        if code is None:
            raise
        return code


def _parser_exit(e: BaseException, debug: bool) -> int | None:
    """Exit code for exceptions from Typer's parser (click's, or the copy newer Typer vendors) and for
    anything unexpected; None to re-raise (TTC_DEBUG=1)."""
    if isinstance(e, KeyboardInterrupt) or type(e).__name__ == "Abort":
        err.print("ttc: interrupted")
        return 130
    if type(e).__name__ == "Exit":
        return int(getattr(e, "exit_code", 0) or 0)
    if isinstance(e, BrokenPipeError):
        return 0
    if debug:
        return None
    if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # a usage error from the parser
        if type(e).__name__ == "NoArgsIsHelpError" and getattr(e, "ctx", None) is not None:
            err.print(e.ctx.get_help(), markup=False, highlight=False)
            return 2
        ctx = getattr(e, "ctx", None)
        where = f" ({ctx.command_path})" if ctx is not None else ""
        msg = " ".join(e.format_message().split())
        err.print(f"ttc: error{where}: {msg}", markup=False, highlight=False, soft_wrap=True)
        return int(e.exit_code)
    err.print(f"ttc: internal error: {type(e).__name__}: {e} (TTC_DEBUG=1 shows the traceback)", markup=False)
    return 1
