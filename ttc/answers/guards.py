"""Checks run on an answer before any sympy parsing: is it code, and is it too big to evaluate?

Answers come from model output, which is untrusted. Two kinds of text must never reach sympy:

- Text that looks like Python code (`__import__('os')`, `().__class__`, `lambda: ...`, `exec(...)`).
  math-verify itself passes only digit-and-operator strings to `parse_expr` (its ExprExtractionConfig
  regex) and number tokens to `sympy.Number`, and latex2sympy builds expressions from its ANTLR parse
  tree without `eval`, so no path we know of evaluates such text; rejecting it here means a change in
  those libraries cannot open one. Such an answer is graded not equivalent.
- Text whose value is astronomically large (`9^9^9^9`, `10**10**10`, `100000!`) or whose nesting is
  deep enough to exhaust the parser's recursion. Big-integer arithmetic runs inside C and cannot be
  interrupted by a signal, so a time limit alone would not stop it. Such an answer is compared as
  normalized text only.

Every check is a bounded scan of the string, linear in its length.
"""

from __future__ import annotations

import re

# Longer than any real final answer (MATH-500's longest is 53 characters) by a wide margin.
MAX_ANSWER_CHARS = 1000
# Deeper than any real answer's nesting of (), [], {}.
MAX_NESTING_DEPTH = 30
# Literal exponents and factorial arguments with more digits than this are refused.
MAX_EXPONENT_DIGITS = 5
MAX_FACTORIAL_DIGITS = 4

# Python, not mathematics: dunders, quotes, and builtins that reach the interpreter. A backslash
# before a word makes it a LaTeX command (`\lambda` is a Greek letter), which is allowed.
_CODE_LIKE = re.compile(
    r"__|[\"'`@]|(?<!\\);"
    r"|(?<![\\A-Za-z])(?:import|lambda|exec|eval|compile|getattr|setattr|delattr|globals|locals"
    r"|builtins|subprocess|system|popen|open|class|bases|subclasses|mro|breakpoint|input)(?![A-Za-z])",
)
_POWER = r"(?:\^|\*\*)"
# number ^ number ^ ... in any bracketing: a numeric power tower (`9^9^9`, `9^{9^{9}}`, `10**10**10`).
_NUMERIC_TOWER = re.compile(
    rf"\d\s*[)}}\]]*\s*{_POWER}\s*[({{\[]*\s*-?\d+(?:\.\d+)?\s*[)}}\]]*\s*{_POWER}\s*[({{\[]*\s*-?\d"
)
# A literal exponent with too many digits: `2^{123456}`, `3**1000000`.
_HUGE_EXPONENT = re.compile(rf"{_POWER}\s*[({{\[]*\s*-?\d{{{MAX_EXPONENT_DIGITS + 1}}}")
# A factorial of a literal with too many digits: `100000!`, `(123456)!`, `{99999}!`.
_HUGE_FACTORIAL = re.compile(rf"\d{{{MAX_FACTORIAL_DIGITS + 1}}}\s*[)}}\]]*\s*!")
# Scientific notation with a huge exponent: `1e999999`.
_HUGE_E_NOTATION = re.compile(rf"\d[eE][+-]?\d{{{MAX_EXPONENT_DIGITS + 1}}}")


def looks_like_code(answer: str) -> bool:
    """True when the answer contains Python syntax or names that a math answer never needs."""
    return _CODE_LIKE.search(answer) is not None


def too_big_to_evaluate(answer: str) -> bool:
    """True when evaluating the answer could take unbounded time or memory (see module docstring)."""
    if len(answer) > MAX_ANSWER_CHARS:
        return True
    if nesting_depth(answer) > MAX_NESTING_DEPTH:
        return True
    return any(
        pattern.search(answer) is not None
        for pattern in (_NUMERIC_TOWER, _HUGE_EXPONENT, _HUGE_FACTORIAL, _HUGE_E_NOTATION)
    )


def nesting_depth(answer: str) -> int:
    """The deepest nesting of (), [] and {} in the answer, counting escaped braces too."""
    depth = deepest = 0
    for char in answer:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth = max(depth - 1, 0)
    return deepest
