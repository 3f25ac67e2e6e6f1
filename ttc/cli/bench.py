"""`ttc speed` and `ttc bench`: the engine's sampling speed against a sequential loop, and a dataset run under
strategies x budgets with live progress, a resumable samples file, summaries and a plot."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..errors import UsageError
from .app import app, err
from .options import (
    BackendOpt,
    BaseUrlOpt,
    GpuOpt,
    JsonOpt,
    ModelOpt,
    PresetOpt,
    PrmBaseUrlOpt,
    QuietOpt,
    SeedOpt,
    ServedModelOpt,
    ThreadsOpt,
    VerboseOpt,
)


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
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature.")] = 0.8,
    top_k: Annotated[int, typer.Option("--top-k", help="Top-k (0: off).")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Top-p (1: off).")] = 1.0,
    sequential: Annotated[
        bool, typer.Option("--sequential/--no-sequential", help="Also time the sequential create_completion loop.")
    ] = True,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="Folder with llama.cpp's llama-batched and llama-batched-bench: run them beside ttc at each N.",
        ),
    ] = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="Also time sampling with token statistics on (side by side, ratio).")
    ] = False,
    think: Annotated[
        bool, typer.Option("--think", help="Also time sampling with the per-sequence thinking controller (ratio).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Generation tokens/s of ttc's batched sampler vs a sequential create_completion loop, and their ratio;
    with --reference, vs llama.cpp's llama-batched (same sampler, -kvu) and batched-bench (decode only)."""
    from ..engine.llama.speed import parse_ns, run_speed

    if stats and think:
        raise UsageError("--stats and --think each time one variant: run them one at a time")

    rows = run_speed(
        model,
        preset,
        parse_ns(n),
        tokens,
        threads,
        n_gpu_layers,
        random_model=random,
        progress=None if json_out else err,
        sampling={"temperature": temperature, "top_k": top_k, "top_p": top_p},
        sequential_baseline=sequential,
        reference=reference,
        stats=stats,
        think=think,
    )
    if json_out:
        print(json.dumps(rows))


@app.command(
    epilog="Examples:\n\n  ttc bench ttc/data/arith500.jsonl --strategies majority --budgets 1,2,4,8,16 --limit 50\n\n"
    "  ttc bench math500.jsonl --limit 20 --out runs/math --plot\n\n"
    "  ttc bench math500.jsonl --limit 20 --out runs/math --resume\n\n"
    "  ttc bench runs/a --paired auto@16,weighted-best-of-n@64 --plot    # a finished run: nothing is rerun\n\n"
    "Accuracies carry 95% Wilson score intervals. --paired compares two cells on the problems both answered: "
    "the difference with Newcombe's 95% interval for paired proportions (method 10), the discordant counts b "
    "(only the first right) and c (only the second right), and the exact McNemar p-value."
)
def bench(
    data: Annotated[
        str,
        typer.Argument(
            help="JSONL dataset: MATH-500, GSM8K, arith, or any with --*-key; or a run folder (DIR with "
            "samples.jsonl) to summarize again without running anything."
        ),
    ],
    strategies: Annotated[str, typer.Option("--strategies", "-s", help="Comma-separated strategies.")] = "majority",
    budgets: Annotated[str, typer.Option("--budgets", "-b", help="Comma-separated budgets.")] = "1,4,16,64",
    think_budgets: Annotated[
        str | None,
        typer.Option(
            "--think-budgets",
            help="Thinking models: comma-separated think budgets (e.g. 0,256,1024); every strategy runs at each "
            "(labels S:think=T), with a think budget x budget table and, with --plot, accuracy_vs_thinking.png.",
        ),
    ] = None,
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
    plot: Annotated[
        bool,
        typer.Option("--plot", help="Write DIR/accuracy_vs_budget.png: by budget, by tokens generated, by difficulty."),
    ] = False,
    paired: Annotated[
        list[str] | None,
        typer.Option(
            "--paired",
            metavar="A@N,B@M",
            help="Compare two cells on the same problems (e.g. auto@16,weighted-best-of-n@64): difference, "
            "95% interval, b, c, McNemar p on stderr and in summary.json. Repeatable.",
        ),
    ] = None,
    preset: PresetOpt = None,
    presets: Annotated[
        str | None,
        typer.Option(
            "--presets",
            help="Two or more presets (e.g. qwen2.5-math-1.5b,my-7b.yaml): each runs in DIR/PRESET on the same "
            "problems, then DIR/tradeoff.json gives the FLOPs-matched table (best accuracy within each FLOPs "
            "level, per difficulty group, and which model wins).",
        ),
    ] = None,
    preset_budgets: Annotated[
        list[str] | None,
        typer.Option(
            "--preset-budgets",
            metavar="NAME=BUDGETS",
            help="Other budgets for one of --presets (e.g. my-7b=1,2,4,8,16). Repeatable.",
        ),
    ] = None,
    total_budget: Annotated[
        str | None,
        typer.Option(
            "--total-budget",
            metavar="T[,T2...]",
            help="One total for the whole file, in generations (e.g. 3200 for 100 problems at 32 each): "
            "uniform, the allocator, the allocator with online reallocation and the stream allocator side by "
            "side, paired against uniform; several totals make a curve (--plot: DIR/accuracy_vs_total.png).",
        ),
    ] = None,
    total_tokens: Annotated[
        str | None,
        typer.Option("--total-tokens", metavar="T[,T2...]", help="As --total-budget, in policy tokens generated."),
    ] = None,
    total_ways: Annotated[
        str | None,
        typer.Option(
            "--total-ways",
            metavar="WAYS",
            help="With --total-budget: only these of uniform,allocator,allocator+online,stream (e.g. uniform for "
            "a reference total added to a run with --resume --force).",
        ),
    ] = None,
    model: ModelOpt = None,
    seed: SeedOpt = 0,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (default: the preset's).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Tokens per solution (default: the preset's).")] = None,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    backend: BackendOpt = None,
    base_url: BaseUrlOpt = None,
    prm_base_url: PrmBaseUrlOpt = None,
    served_model: ServedModelOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print summary.json on stdout at the end.")] = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run a dataset under strategies x budgets: live progress, resumable DIR/samples.jsonl, summaries, plot."""
    from pathlib import Path

    from ..bench import BenchOptions, parse_budgets, parse_strategies, run_bench
    from ..bench.paired import parse_pairs
    from ..bench.report import is_run_folder, report_run
    from ..bench.tradeoff import is_tradeoff_folder, parse_preset_budgets, parse_presets, report_tradeoff, run_tradeoff
    from ..solve import ModelOptions, SamplingOverrides

    pairs = parse_pairs(paired)
    if presets is None and preset_budgets:
        raise UsageError("--preset-budgets goes with --presets")
    if presets is not None and preset is not None:
        raise UsageError("--preset and --presets do not go together: name every model in --presets")
    if is_tradeoff_folder(data) and not is_run_folder(data):
        if presets is not None or out is not None or resume or limit is not None:
            raise UsageError(f"{data} is a finished --presets run: it is summarized again and nothing runs")
        result = report_tradeoff(Path(data), None, plot=plot, quiet=quiet, console=err)
        if json_out:
            print(json.dumps(result, ensure_ascii=False))
        return
    if is_run_folder(data):
        given = {"--out": out is not None, "--resume": resume, "--force": force, "--limit": limit is not None}
        given |= {"--strategies": strategies != "majority", "--budgets": budgets != "1,4,16,64"}
        if any(given.values()):
            flag = next(k for k, v in given.items() if v)
            raise UsageError(
                f"{data} is a run folder: it is summarized again and nothing runs, so {flag} does not apply; "
                "to continue the run, pass its dataset with --out and --resume"
            )
        summary = report_run(data, pairs, plot=plot, quiet=quiet, console=err)
        if json_out:
            print(json.dumps(summary, ensure_ascii=False))
        return
    labels = parse_strategies(strategies)
    if think_budgets is not None:
        from ..bench.thinkgrid import expand, parse_think_budgets

        labels = expand(labels, parse_think_budgets(think_budgets))
    total, unit = _total_flags(total_budget, total_tokens, strategies, budgets, presets)
    if total and think_budgets is not None:
        raise UsageError("--think-budgets and a total budget do not go together yet: run the grid, or the total")
    opts = BenchOptions(
        data=data,
        out=out or str(Path("bench-runs") / Path(data).stem),
        strategies=labels,
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
        paired=pairs,
        quiet=quiet,
        models=ModelOptions(
            preset,
            model,
            n_gpu_layers,
            threads,
            verbose,
            backend=backend,
            base_url=base_url,
            served_model=served_model,
            prm_base_url=prm_base_url,
        ),
        sampling=SamplingOverrides(temperature=temperature, max_tokens=max_tokens),
        total_budgets=total,
        total_unit=unit,
        total_ways=_ways(total_ways, bool(total)),
    )
    if presets is not None:
        names = parse_presets(presets)
        result = run_tradeoff(opts, names, parse_preset_budgets(preset_budgets, names), console=err)
        if json_out:
            print(json.dumps(result, ensure_ascii=False))
        return
    if opts.total_budgets:  # one total for the whole file (bench/total.py)
        from ..bench.total import run_total

        summary = run_total(opts, console=err)
    else:
        summary = run_bench(opts, console=err)
    if json_out:
        print(json.dumps(summary, ensure_ascii=False))


def _total_flags(total_budget, total_tokens, strategies, budgets, presets) -> tuple[list[int], str]:
    """--total-budget / --total-tokens: the totals and their unit; usage errors for flags that do not go with them."""
    if total_budget is None and total_tokens is None:
        return [], "generations"
    from ..bench.total import parse_totals

    if total_budget is not None and total_tokens is not None:
        raise UsageError("--total-budget and --total-tokens do not go together: give the total in one unit")
    flag = "--total-budget" if total_budget is not None else "--total-tokens"
    for other, given in (("--strategies", strategies != "majority"), ("--budgets", budgets != "1,4,16,64"),
                         ("--presets", presets is not None)):  # fmt: skip
        if given:
            raise UsageError(f"{flag} runs its own cells (uniform, allocator, allocator+online, stream): drop {other}")
    return parse_totals(total_budget if total_budget is not None else total_tokens, flag), (
        "generations" if total_budget is not None else "tokens"
    )


def _ways(text: str | None, total: bool) -> list[str]:
    """--total-ways: a subset of the four ways, in their order; [] (all) when not given."""
    if text is None:
        return []
    from ..policy.allocate import MODES

    if not total:
        raise UsageError("--total-ways goes with --total-budget or --total-tokens")
    ways = [w.strip() for w in text.split(",") if w.strip()]
    bad = [w for w in ways if w not in MODES]
    if bad or not ways:
        raise UsageError(f"--total-ways: '{bad[0] if bad else text}' is not one of {', '.join(MODES)}")
    return ways
