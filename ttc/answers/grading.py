"""Grade predictions against gold answers: one pair (`grade`) or a JSONL file of them (`grade_jsonl`).

These are the functions behind `ttc grade`. A prediction may be a whole solution (its final answer is
extracted) or a bare answer; a gold value may be a dataset's worked solution or its answer field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ttc.answers.equivalence import is_equivalent
from ttc.answers.extract import extract_answer, extract_gold
from ttc.errors import UsageError


@dataclass(frozen=True)
class GradeResult:
    """The outcome of grading one prediction: the two answers compared and the verdict."""

    pred_answer: str | None  # the prediction's final answer; None when the prediction was empty
    gold_answer: str  # the gold final answer
    correct: bool  # whether the two are equivalent


def grade(
    pred_text: str,
    gold: str | int | float,
    fmt: str = "auto",
    last_number_fallback: bool = False,
    timeout_s: float = 5.0,
) -> GradeResult:
    """Grade one prediction (a solution or a bare answer) against one gold value.

    The prediction's answer is extracted in `fmt` (see `extract_answer`); if it shows no answer in that
    form, the whole prediction is taken as the bare answer. The gold goes through `extract_gold`.
    """
    pred_text = "" if pred_text is None else str(pred_text)
    pred_answer = extract_answer(pred_text, fmt, last_number_fallback)
    if pred_answer is None:
        pred_answer = pred_text.strip() or None
    gold_answer = extract_gold(gold)
    correct = is_equivalent(pred_answer, gold_answer, timeout_s=timeout_s)
    return GradeResult(pred_answer=pred_answer, gold_answer=gold_answer, correct=correct)


def grade_jsonl(
    path: str | Path,
    pred_key: str,
    gold_key: str,
    fmt: str = "auto",
    last_number_fallback: bool = False,
    timeout_s: float = 5.0,
) -> dict:
    """Grade every line of a JSONL file; return {"accuracy": float, "correct": int, "n": int}.

    Blank lines are skipped. A line that is not a JSON object, or lacks `pred_key` or `gold_key`,
    raises UsageError naming the file, the line number and the key. An empty file has accuracy 0.0.
    """
    path = Path(path)
    try:
        handle = path.open("rb")  # bytes, decoded line by line, so a bad byte is reported with its line
    except OSError as error:
        raise UsageError(f"{path}: cannot read the file ({error.strerror}); check the path") from None
    correct = total = 0
    with handle:
        for line_number, raw_line in enumerate(handle, start=1):
            try:
                line = raw_line.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"{path}:{line_number}: not UTF-8 text; save the file as UTF-8") from None
            if not line.strip():
                continue
            record = _parse_record(path, line_number, line)
            pred = _field(record, path, line_number, pred_key)
            gold = _field(record, path, line_number, gold_key)
            result = grade(pred, gold, fmt, last_number_fallback, timeout_s)
            correct += result.correct
            total += 1
    return {"accuracy": correct / total if total else 0.0, "correct": correct, "n": total}


def _parse_record(path: Path, line_number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"{path}:{line_number}: malformed JSON ({error.msg}); each line must be one JSON object"
        ) from None
    if not isinstance(record, dict):
        raise UsageError(f"{path}:{line_number}: expected a JSON object, found {type(record).__name__}")
    return record


def _field(record: dict, path: Path, line_number: int, key: str):
    if key not in record or record[key] is None:
        names = sorted(map(str, record))
        present = ", ".join(repr(name) for name in names[:10]) + (", ..." if len(names) > 10 else "")
        raise UsageError(
            f"{path}:{line_number}: missing or null key {key!r} (keys present: {present or 'none'}); "
            "pass the key this file uses"
        )
    return record[key]
