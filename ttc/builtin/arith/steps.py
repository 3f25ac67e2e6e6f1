"""Solutions of the `arith` task: the correct steps, and an exact checker of which steps are right.

A solution is one step per line, each applying the next operator to the running total, then the answer:

    37+48-19   ->   37+48=85
                    85-19=66
                    \\boxed{66}

Step i (0-based, i < number of operators) is right when, whitespace aside, it reads exactly
`L{op}{n}={L op n}` where `{op}{n}` is the problem's i-th operation and `L` is the running total the
solution carries in: the first operand for step 0, else the result written by step i-1 (or the true
running total when step i-1 is unreadable). The answer step is right when it reads `\\boxed{V}` with V the
total carried in. Every step after the answer step is wrong. So a step is judged on its own (a step that
correctly continues from a wrong total is right); `prefix_good` applies the PRM rule "a step is good when it
and every step before it are right", under which a solution is all good exactly when it is the correct one.
"""

from __future__ import annotations

import re

from .problems import apply_op, parse_problem

_WS = re.compile(r"\s+")
_OP_STEP = re.compile(r"^(-?\d+)([+-])(\d+)=(-?\d+)$")
_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


def answer_step(value: int) -> str:
    """The final line of a solution: `\\boxed{value}`."""
    return "\\boxed{" + str(int(value)) + "}"


def solution_steps(problem: str) -> list[str]:
    """The correct steps of `problem`: one per operator with the running total, then `\\boxed{answer}`."""
    total, rest = parse_problem(problem)
    steps = []
    for op, n in rest:
        new = apply_op(total, op, n)
        steps.append(f"{total}{op}{n}={new}")
        total = new
    steps.append(answer_step(total))
    return steps


def solution_text(problem: str, delimiter: str = "\n") -> str:
    """The correct solution as text: the steps joined by `delimiter` (no trailing delimiter)."""
    return delimiter.join(solution_steps(problem))


def split_steps(text: str, delimiter: str = "\n") -> list[str]:
    """The steps of a solution text, split on `delimiter`, blank pieces dropped."""
    return [s for s in text.split(delimiter) if s.strip()]


def parse_boxed(text: str) -> int | None:
    """The integer in the last `\\boxed{...}` of `text`, or None."""
    found = _BOXED.findall(text)
    return int(found[-1]) if found else None


def check_steps(problem: str, steps: list[str], cumulative: bool = False) -> list[bool]:
    """Which steps are right, one flag per step (see the module docstring for the rule).

    With `cumulative=True` a step is flagged right only if it and every step before it are right (the PRM
    label). Raises ValueError if `problem` is not a valid problem.
    """
    first, rest = parse_problem(problem)
    flags: list[bool] = []
    true_total = first  # the correct running total before step i
    carried: int | None = first  # the total the solution carries into step i (None: unreadable)
    for i, raw in enumerate(steps):
        step = _WS.sub("", raw)
        left = carried if carried is not None else true_total
        if i < len(rest):
            op, n = rest[i]
            value = apply_op(left, op, n)
            flags.append(step == f"{left}{op}{n}={value}")
            m = _OP_STEP.match(step)
            carried = int(m.group(4)) if m else None
            true_total = apply_op(true_total, op, n)
        elif i == len(rest):
            flags.append(step == answer_step(left))
        else:
            flags.append(False)
    return prefix_good(flags) if cumulative else flags


def prefix_good(flags: list[bool]) -> list[bool]:
    """A step is good when it and every step before it are right."""
    out, ok = [], True
    for f in flags:
        ok = ok and bool(f)
        out.append(ok)
    return out


def check_solution(problem: str, text: str, delimiter: str = "\n") -> bool:
    """True when the solution is exactly right: every step right and nothing after the answer step."""
    steps = split_steps(text, delimiter)
    first, rest = parse_problem(problem)
    return len(steps) == len(rest) + 1 and all(check_steps(problem, steps))
