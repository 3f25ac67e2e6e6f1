"""Problems of the `arith` task: parsing, exact evaluation and a seeded generator.

A problem is 2 to 9 integers from 1 to 99 (no sign, no leading zero) joined by 1 to 8 operators `+`/`-`,
e.g. `37+48-19`. Whitespace anywhere in it is ignored. Evaluation is left to right, done by hand: the
text is never passed to `eval`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator

MIN_OPS, MAX_OPS = 1, 8  # operators per problem
MIN_VALUE, MAX_VALUE = 1, 99  # each operand

_WS = re.compile(r"\s+")
_NUMBER = re.compile(r"[1-9][0-9]?")


def canonical(problem: str) -> str:
    """The problem with all whitespace removed (the form the models read); raises ValueError if invalid."""
    first, rest = parse_problem(problem)
    return str(first) + "".join(f"{op}{n}" for op, n in rest)


def parse_problem(problem: str) -> tuple[int, list[tuple[str, int]]]:
    """Split a problem into its first operand and its (operator, operand) pairs.

    Raises ValueError for anything that is not the task's format: other characters, an operand outside
    1..99 or with a leading zero, a sign in front of the first operand, fewer than 1 or more than 8
    operators.
    """
    if not isinstance(problem, str):
        raise ValueError(f"a problem must be a string, got {type(problem).__name__}")
    text = _WS.sub("", problem)
    if not text:
        raise ValueError("empty problem")
    pos, numbers, ops = 0, [], []
    while True:
        m = _NUMBER.match(text, pos)
        if m is None or (m.end() < len(text) and text[m.end()].isdigit()):
            raise ValueError(f"expected an integer from 1 to 99 at position {pos} of {problem!r}")
        numbers.append(int(m.group()))
        pos = m.end()
        if pos == len(text):
            break
        if text[pos] not in "+-":
            raise ValueError(f"expected '+' or '-' at position {pos} of {problem!r}, got {text[pos]!r}")
        ops.append(text[pos])
        pos += 1
    if not MIN_OPS <= len(ops) <= MAX_OPS:
        raise ValueError(f"a problem has {MIN_OPS} to {MAX_OPS} operators, {problem!r} has {len(ops)}")
    return numbers[0], list(zip(ops, numbers[1:]))


def apply_op(total: int, op: str, n: int) -> int:
    """`total op n` for op "+" or "-"."""
    return total + n if op == "+" else total - n


def evaluate(problem: str) -> int:
    """The integer value of the problem, computed left to right (may be negative)."""
    total, rest = parse_problem(problem)
    for op, n in rest:
        total = apply_op(total, op, n)
    return total


def count_ops(problem: str) -> int:
    """Number of operators in the problem (1..8)."""
    return len(parse_problem(problem)[1])


def random_problem(rng: random.Random, ops: int) -> str:
    """One problem with exactly `ops` operators, operands uniform in 1..99, operators uniform in +/-."""
    if not MIN_OPS <= ops <= MAX_OPS:
        raise ValueError(f"ops must be from {MIN_OPS} to {MAX_OPS}, got {ops}")
    parts = [str(rng.randint(MIN_VALUE, MAX_VALUE))]
    for _ in range(ops):
        parts.append(rng.choice("+-"))
        parts.append(str(rng.randint(MIN_VALUE, MAX_VALUE)))
    return "".join(parts)


def _ops_list(ops: int | Iterable[int] | None) -> list[int]:
    if ops is None:
        return list(range(MIN_OPS, MAX_OPS + 1))
    if isinstance(ops, int):
        return [ops]
    out = sorted(set(ops))
    if not out:
        raise ValueError("ops must name at least one number of operators")
    return out


def iter_problems(ops: int | Iterable[int] | None = None, seed: int = 0, exclude: Iterable[str] = ()) -> Iterator[str]:
    """An endless seeded stream of problems; the number of operators is uniform over `ops` (default 1..8).

    Problems in `exclude` (compared in canonical form) are skipped, which is how training keeps the
    shipped sample dataset held out.
    """
    choices = _ops_list(ops)
    for k in choices:
        if not MIN_OPS <= k <= MAX_OPS:
            raise ValueError(f"ops must be from {MIN_OPS} to {MAX_OPS}, got {k}")
    skip = {canonical(p) for p in exclude}
    rng = random.Random(seed)
    while True:
        p = random_problem(rng, rng.choice(choices))
        if p not in skip:
            yield p


def generate_problems(
    n: int, ops: int | Iterable[int] | None = None, seed: int = 0, exclude: Iterable[str] = ()
) -> list[str]:
    """`n` problems in canonical form (see `iter_problems`); the same seed gives the same problems."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    stream = iter_problems(ops, seed, exclude)
    return [next(stream) for _ in range(n)]
