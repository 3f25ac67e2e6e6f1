"""`ttc difficulty` and `ttc calibrate`: the commands of the compute-optimal policy."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..errors import UsageError
from .app import app, err
from .options import (
    GpuOpt,
    JsonOpt,
    ModelOpt,
    PresetOpt,
    QuietOpt,
    SeedOpt,
    ThreadsOpt,
    VerboseOpt,
    read_problems,
)


@app.command(
    epilog='Examples:\n\n  ttc difficulty "37+48-19" --budget 16\n\n'
    "  ttc difficulty --data ttc/data/arith500.jsonl --limit 100 --samples 16 --pass-samples 64"
)
def difficulty(
    problem: Annotated[str | None, typer.Argument(help="The problem ('-' or nothing: one per line on stdin).")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Scored samples to estimate from.")] = 16,
    budget: Annotated[int | None, typer.Option("--budget", "-b", help="Also say what auto would pick here.")] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="A labeled JSONL dataset: check the levels against true pass rates."),
    ] = None,
    pass_samples: Annotated[
        int, typer.Option("--pass-samples", help="With --data: samples per problem for the true pass rate.")
    ] = 64,
    limit: Annotated[int | None, typer.Option("--limit", help="With --data: only the first N valid problems.")] = None,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = 0,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """How hard is PROBLEM for this model? Prints the level (1 easiest .. 5 hardest) on stdout.

    With --data, every problem of a labeled dataset: its level on stdout (one per line), and on stderr how
    well the levels rank the problems by their true pass rate (Spearman's rho; 1 is perfect)."""
    from ..solve import ModelOptions, Solver, check_budget

    check_budget(samples)
    if data is not None and problem is not None:
        raise UsageError("give either a PROBLEM or --data, not both")
    problems = None if data is not None else read_problems(problem)
    solver = Solver(ModelOptions(preset, model, n_gpu_layers, threads, verbose))
    if data is not None:
        from ..policy.difficulty import check_dataset

        report = check_dataset(solver, data, samples, pass_samples, seed, limit, err, quiet)
        if json_out:
            print(json.dumps(report, ensure_ascii=False))
        else:
            for row in report["rows"]:
                print(row["level"])
        if not quiet:
            rho = report["spearman"]
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            err.print(
                f"{report['problems']} problems; Spearman rho against the failure rate over {pass_samples} samples: "
                f"level {fmt(rho['level'])}, mean score {fmt(rho['mean_score'])}, agreement {fmt(rho['agreement'])}",
                markup=False,
            )
            for level, row in report["by_level"].items():
                err.print(
                    f"  level {level}: {row['problems']} problems, mean pass rate {row['mean_pass_rate']:.1%}",
                    markup=False,
                )
        solver.close()
        return
    for i, text in enumerate(problems):
        if not text.strip():
            print("", flush=True)  # one line out per line in
            continue
        out = solver.difficulty(text, samples, budget, seed, warn=i == 0)
        print(json.dumps(out, ensure_ascii=False) if json_out else out["level"], flush=True)
        if not quiet:
            line = f"mean PRM score {out['mean_score']:.3f}, answer agreement {out['agreement']:.0%}"
            line += f" over {samples} samples; {out['estimator']} estimate {out['estimate']:.3f}"
            if "auto_choice" in out:
                c = out["auto_choice"]
                opts = ", ".join(f"{k}={v}" for k, v in c["options"].items())
                line += f"; auto at budget {c['budget']} would run {c['strategy']}" + (f" ({opts})" if opts else "")
                if c["spend"] < c["budget"]:
                    line += f", spending {c['spend']}"
            err.print(line, markup=False)
    solver.close()


@app.command(
    epilog="Example:\n\n  ttc calibrate ttc/data/arith_calib.jsonl --budgets 1,2,4,8,16,32,64 "
    "--out presets/policies/tiny-arith.yaml --limit 200"
)
def calibrate(
    data: Annotated[str, typer.Argument(help="Labeled JSONL dataset (problems with gold answers).")],
    out: Annotated[str, typer.Option("--out", "-o", help="The policy YAML to write.")],
    budgets: Annotated[str, typer.Option("--budgets", "-b", help="Comma-separated budgets.")] = "1,2,4,8,16,32,64",
    run_dir: Annotated[
        str | None, typer.Option("--dir", help="Where the benches keep results (default: calibrate-runs/NAME).")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", help="Difficulty-estimation samples auto will spend.")] = 4,
    sampled: Annotated[
        str, typer.Option("--sampled", help="Sampled candidates.")
    ] = "majority,best-of-n,weighted-best-of-n",
    search: Annotated[
        str, typer.Option("--search", help="Search/revision candidates (variants like beam:width=2).")
    ] = "beam:width=4,beam:width=2,dvts:width=4,revise:sequential=4,revise:sequential=2",
    search_budgets: Annotated[
        str | None,
        typer.Option("--search-budgets", help="Run the search candidates only at these of --budgets (they cost most)."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N valid problems.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the benches in --dir.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start over in a non-empty --dir.")] = False,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = 0,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Learn which strategy wins at each difficulty level and budget; write a policy for --strategy auto."""
    from pathlib import Path

    from ..bench import BenchOptions, parse_budgets, parse_strategies
    from ..policy.calibrate import CalibrateOptions, run_calibrate
    from ..solve import ModelOptions

    name = Path(out).stem
    template = BenchOptions(
        data=data, out="", limit=limit, seed=seed, resume=resume, force=force, quiet=quiet,
        models=ModelOptions(preset, model, n_gpu_layers, threads, verbose),
    )  # fmt: skip
    policy = run_calibrate(
        CalibrateOptions(
            data=data, out=out, budgets=parse_budgets(budgets), run_dir=run_dir or str(Path("calibrate-runs") / name),
            samples=samples, sampled=parse_strategies(sampled),
            search=parse_strategies(search) if search.strip() else [], bench=template,
            search_budgets=parse_budgets(search_budgets) if search_budgets else None,
        ),
        console=err,
    )  # fmt: skip
    if not quiet:
        err.print(f"policy for {policy.model} written to {out}; thresholds {policy.thresholds}", markup=False)
        for level, row in policy.accuracy.items():
            cells = ", ".join(f"{b}: {c['chosen']} {c['accuracy']:.0%}" for b, c in row.items())
            err.print(f"  level {level}: {cells}", markup=False)
