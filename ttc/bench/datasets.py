"""Reading benchmark datasets: JSONL in the shapes people have, one problem per line.

    shape     problem key  answer key  id key               difficulty keys
    math      problem      answer      unique_id            level, subject   (MATH-500)
    gsm8k     question     answer      (line number)        -                (gold ends in `#### N`)
    arith     problem      answer      id                   ops              (ttc/data/arith500.jsonl)
    custom    --problem-key/--answer-key/--id-key, or `problem`/`answer` (or `solution`) with an
              optional `id`

The shape is detected from the keys of the first record that is a JSON object; explicit keys override it.
A malformed line (not UTF-8, not JSON, not an object, a missing or empty key, a duplicate id) is reported
with its line number and skipped, or is fatal with `strict`. Gold answers are kept as the file has them
(GSM8K's whole worked solution, MATH's answer, arith's integer); `ttc.answers.extract_gold` takes the
final answer out when grading.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

DIFFICULTY_KEYS = ("level", "subject", "ops")  # summarized by value when a dataset has them


@dataclass(frozen=True)
class Problem:
    id: str  # the dataset's id, or the line number as text
    text: str  # the problem statement
    gold: Any  # the gold answer as the file has it (text or number)
    line: int  # 1-based line number in the file
    difficulty: dict[str, Any] = field(default_factory=dict)  # level / subject / ops when present


@dataclass(frozen=True)
class Keys:
    problem: str
    answer: str
    id: str | None  # None: ids are line numbers


@dataclass
class Dataset:
    path: Path
    sha256: str  # of the file's bytes: a changed file is a changed run config
    shape: str  # math | gsm8k | arith | custom
    keys: Keys
    problems: list[Problem]
    skipped: list[str]  # one message per skipped line, "FILE:LINE: why"


def detect_keys(record: dict, problem_key: str | None, answer_key: str | None, id_key: str | None) -> tuple[str, Keys]:
    """The shape and keys of a dataset from its first record; explicit keys win over detection."""
    shape, keys = "custom", None
    if "question" in record and "answer" in record:
        shape, keys = "gsm8k", Keys("question", "answer", "id" if "id" in record else None)
    elif "problem" in record and "answer" in record:
        if "unique_id" in record:
            shape, keys = "math", Keys("problem", "answer", "unique_id")
        elif "id" in record and "ops" in record:
            shape, keys = "arith", Keys("problem", "answer", "id")
        else:
            keys = Keys("problem", "answer", "id" if "id" in record else None)
    elif "problem" in record and "solution" in record:  # MATH without the answer column: boxed in solution
        shape, keys = "math", Keys("problem", "solution", "unique_id" if "unique_id" in record else None)
    if problem_key or answer_key or id_key:
        shape = "custom"
    problem = problem_key or (keys.problem if keys else None)
    answer = answer_key or (keys.answer if keys else None)
    if problem is None or answer is None:
        found = ", ".join(sorted(record)[:12]) or "none"
        raise UsageError(
            f"cannot tell which keys hold the problem and the answer (the first record has keys: {found}); "
            "pass --problem-key and --answer-key"
        )
    return shape, Keys(problem, answer, id_key or (keys.id if keys else None))


def read_dataset(
    path: str | Path,
    problem_key: str | None = None,
    answer_key: str | None = None,
    id_key: str | None = None,
    strict: bool = False,
) -> Dataset:
    """Every valid problem of a JSONL file, in file order, with the lines skipped and why."""
    path = Path(path)
    data = _read_bytes(path)
    if not data.strip():
        raise UsageError(f"{path} is empty: a dataset is JSONL, one problem per line")
    shape, keys = "custom", None
    problems: list[Problem] = []
    skipped: list[str] = []
    first_line_of: dict[str, int] = {}

    def bad(line_no: int, why: str) -> None:
        msg = f"{path}:{line_no}: {why}"
        if strict:
            raise UsageError(f"{msg} (without --strict such lines are skipped)")
        skipped.append(msg + "; skipped")

    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError:
            bad(line_no, "not UTF-8 text")
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            bad(line_no, f"not valid JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(record, dict):
            bad(line_no, f"a JSON {type(record).__name__}, not an object with the problem and answer")
            continue
        if keys is None:
            shape, keys = detect_keys(record, problem_key, answer_key, id_key)
        problem, why = _parse(record, keys, line_no)
        if problem is None:
            bad(line_no, why)
            continue
        if problem.id in first_line_of:
            bad(line_no, f"duplicate id '{problem.id}' (first on line {first_line_of[problem.id]})")
            continue
        first_line_of[problem.id] = line_no
        problems.append(problem)
    if not problems:
        first = f" (first: {skipped[0].split(': ', 1)[1]})" if skipped else ""
        raise UsageError(f"{path}: no valid problem in the file{first}")
    return Dataset(path, hashlib.sha256(data).hexdigest(), shape, keys, problems, skipped)


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise UsageError(f"dataset not found: {path}")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; pass a JSONL file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: cannot read the dataset ({e.strerror})") from None


def _parse(record: dict, keys: Keys, line_no: int) -> tuple[Problem | None, str]:
    """A Problem from one record, or None and why not."""
    for key in (keys.problem, keys.answer) + ((keys.id,) if keys.id else ()):
        if key not in record:
            return None, f"no '{key}' key"
    text = record[keys.problem]
    if not isinstance(text, str) or not text.strip():
        return None, f"'{keys.problem}' is empty or not text"
    gold = record[keys.answer]
    if isinstance(gold, bool) or not isinstance(gold, (str, int, float)) or not str(gold).strip():
        return None, f"'{keys.answer}' is empty or not text or a number"
    if keys.id:
        pid = record[keys.id]
        if isinstance(pid, bool) or not isinstance(pid, (str, int)) or str(pid).strip() == "":
            return None, f"'{keys.id}' is empty or not text or an integer"
        pid = str(pid)
    else:
        pid = str(line_no)
    difficulty = {
        k: record[k]
        for k in DIFFICULTY_KEYS
        if k in record and isinstance(record[k], (str, int, float)) and not isinstance(record[k], bool)
    }
    return Problem(pid, text, gold, line_no, difficulty), ""
