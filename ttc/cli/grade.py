"""`ttc grade`: is a predicted answer equivalent to the gold one (exit 0 yes, 1 no), or accuracy over a JSONL."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..errors import UsageError
from .app import app, err
from .options import JsonOpt


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
