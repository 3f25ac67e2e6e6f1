"""The shipped sample dataset `ttc/data/arith500.jsonl` and the rule that keeps it out of training.

Each line is `{"id": "arith-000", "problem": "37+48-19", "answer": 66, "ops": 2}`. The 500 problems are
balanced over 1..8 operators (63 each for 1-4, 62 each for 5-8) and drawn with a fixed seed, so
`write_sample_dataset` rebuilds the file byte for byte. Training code passes `heldout_problems()` as
`exclude` to the generator, so no training example uses one of these problems.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .problems import MAX_OPS, MIN_OPS, canonical, count_ops, evaluate, random_problem

HELDOUT_PATH = Path(__file__).resolve().parents[2] / "data" / "arith500.jsonl"
SAMPLE_SEED = 20240806  # seed of the shipped sample (the day Snell et al. appeared)
SAMPLE_SIZE = 500


def sample_dataset_records(
    n: int = SAMPLE_SIZE, seed: int = SAMPLE_SEED, exclude: set[str] | None = None, prefix: str = "arith"
) -> list[dict]:
    """`n` distinct problems, operator counts balanced over 1..8 in a seeded shuffled order; none of the
    canonical problems in `exclude`."""
    rng = random.Random(seed)
    span = MAX_OPS - MIN_OPS + 1
    ops = [MIN_OPS + i % span for i in range(n)]
    rng.shuffle(ops)
    seen: set[str] = set(exclude or ())
    records = []
    for k in ops:
        p = random_problem(rng, k)
        while p in seen:
            p = random_problem(rng, k)
        seen.add(p)
        records.append({"id": f"{prefix}-{len(records):03d}", "problem": p, "answer": evaluate(p), "ops": k})
    return records


def write_sample_dataset(
    path: str | Path = HELDOUT_PATH,
    n: int = SAMPLE_SIZE,
    seed: int = SAMPLE_SEED,
    exclude: set[str] | None = None,
    prefix: str = "arith",
) -> Path:
    """Write the sample dataset as JSONL (the shipped file is this with the defaults)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in sample_dataset_records(n, seed, exclude, prefix):
            f.write(json.dumps(r) + "\n")
    return path


def read_dataset(path: str | Path = HELDOUT_PATH) -> list[dict]:
    """Records of an arith JSONL file (id, problem, answer, ops), checked against the task's rules."""
    out = []
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            r = json.loads(line)
            if evaluate(r["problem"]) != r["answer"] or count_ops(r["problem"]) != r["ops"]:
                raise ValueError(f"{path}:{lineno}: answer or ops do not match the problem")
            out.append(r)
    return out


def heldout_problems() -> set[str]:
    """Canonical problems that training must never see: the shipped sample dataset."""
    return {canonical(r["problem"]) for r in read_dataset(HELDOUT_PATH)}
