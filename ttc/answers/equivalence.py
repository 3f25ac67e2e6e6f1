"""Decide whether a predicted final answer equals the gold one, with math-verify, safely and in bounded time.

`is_equivalent(pred, gold)` takes two bare answers (as `extract_answer` returns them) and goes:

1. Refuse code. An answer that looks like Python (`__import__`, quotes, `lambda`, `exec`, ...; see
   `guards.looks_like_code`) is not equivalent to anything, and is never handed to sympy. math-verify
   0.9 does call `eval` (through sympy's `parse_expr` and `sympy.Number(str)`), but only on strings its
   regexes and the latex2sympy grammar restrict to digits and operators; this check is defence in depth.
2. Compare as text. A number followed by plain words ("5 dollars") is first cut to the number
   (`normalize.drop_unit_words`); answers that then normalize to the same string
   (`normalize.normalize_answer_text`) are equivalent. This is fast and needs no parsing.
3. Refuse the enormous. An answer too long, too deeply nested, or naming a number too big to compute
   (`9^9^9`, `100000!`; see `guards.too_big_to_evaluate`) is decided by step 2 alone, because big-integer
   arithmetic runs in C, where no signal can interrupt it.
4. Compare with math-verify. Each answer is wrapped as `\\boxed{...}` and parsed with
   LatexExtractionConfig; if that gives no sympy value, the bare answer is parsed with
   ExprExtractionConfig (plain `1/2`, `0.5`, `1,000`); then `verify(gold, pred)` decides.

Time bound: math-verify's own timeouts are switched off (`parsing_timeout=None`,
`timeout_seconds=None`): they use `signal.alarm`, which raises ValueError outside the main thread, counts
whole seconds, and restarts for every parse and every comparison. Instead step 4 as a whole runs under
one deadline of `timeout_s` (see `deadline`): a SIGALRM timer in the main thread, a watchdog thread that
raises inside the worker elsewhere. A timeout counts as not equivalent. What no deadline can cut short,
one long computation inside C, is kept out by step 3. The first call in a process also imports and warms
up math-verify (about 1 s, outside the deadline, so that a verdict never depends on a cold start).
"""

from __future__ import annotations

import logging
import threading

from ttc.answers.deadline import DeadlineExceeded, call_with_deadline
from ttc.answers.guards import looks_like_code, too_big_to_evaluate
from ttc.answers.normalize import drop_unit_words, normalize_answer_text

_math_verify = None  # the math_verify module, once `warm_up` has imported it
_warm_up_lock = threading.Lock()


def is_equivalent(pred: str | None, gold: str, timeout_s: float = 5.0) -> bool:
    """True when `pred` and `gold` are the same mathematical answer; False on any doubt or timeout.

    Both are bare answers (`\\frac{1}{2}`, `x=5`, `\\text{(C)}`), not whole solutions; `None` (no answer
    extracted) is never equivalent. Returns within about `timeout_s`, plus about 1 s on the first call
    in a process, which imports and warms up math-verify (call `warm_up()` to pay that earlier).
    """
    if pred is None or gold is None:
        return False
    pred, gold = drop_unit_words(str(pred)), drop_unit_words(str(gold))
    if looks_like_code(pred) or looks_like_code(gold):
        return False
    pred_text, gold_text = normalize_answer_text(pred), normalize_answer_text(gold)
    if not pred_text or not gold_text:
        return False
    if pred_text == gold_text:
        return True
    if too_big_to_evaluate(pred) or too_big_to_evaluate(gold):
        return False
    warm_up()  # once per process, outside the deadline: a fixed cost, so verdicts never depend on it
    return call_with_deadline(lambda: _math_verify_equivalent(pred, gold), timeout_s, on_timeout=False)


def _math_verify_equivalent(pred: str, gold: str) -> bool:
    """math-verify's verdict on two bare answers already checked by `guards` (no time limit here)."""
    gold_parsed = parse_answer(gold)
    if not gold_parsed:
        return False
    pred_parsed = parse_answer(pred)
    if not pred_parsed:
        return False
    try:
        return bool(_math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except DeadlineExceeded:
        raise
    except Exception:  # math-verify catches its own errors; this is for anything it lets through
        return False


def parse_answer(answer: str) -> list:
    """math-verify's parse of a bare answer: sympy values first, then its text fallback; [] if none.

    The answer is wrapped as `\\boxed{...}` so the LaTeX extractor takes all of it; if that yields no
    sympy value, the bare text is tried as a plain expression (`1/2`, `0.5`, `1,000`).
    """
    mv = warm_up()
    latex = _strip_math_delimiters(answer)
    parsed = _parse(mv, "\\boxed{" + latex + "}", mv.LatexExtractionConfig(boxed_match_priority=0))
    if _has_sympy_value(parsed):
        return parsed
    as_expression = _parse(mv, latex, mv.ExprExtractionConfig())
    if _has_sympy_value(as_expression):
        return as_expression
    return parsed


def _parse(mv, text: str, config) -> list:
    try:
        return list(mv.parse(text, extraction_config=[config], parsing_timeout=None))
    except DeadlineExceeded:
        raise
    except Exception:
        return []


def _has_sympy_value(parsed: list) -> bool:
    return any(not isinstance(item, str) for item in parsed)


def _strip_math_delimiters(answer: str) -> str:
    """`$x$`, `$$x$$`, `\\(x\\)`, `\\[x\\]` -> `x`; anything else stripped of spaces only."""
    text = answer.strip()
    for opening, closing in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(text) >= len(opening) + len(closing) and text.startswith(opening) and text.endswith(closing):
            return text[len(opening) : len(text) - len(closing)].strip()
    return text


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its timeouts are off; they are off on purpose (see module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


def warm_up():
    """Import and warm up math-verify once per process (about 1 s); return the module.

    Silences math-verify's warning about the timeouts we switch off on purpose, and runs a few small
    comparisons so that the modules sympy imports lazily are imported outside any deadline (a deadline
    landing inside an import would leave a half-initialized module behind).
    """
    global _math_verify
    with _warm_up_lock:
        if _math_verify is not None:
            return _math_verify
        import math_verify

        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).addFilter(_DropTimeoutDisabledWarning())
        for gold, pred in _WARM_UP_PAIRS:
            math_verify.verify(
                math_verify.parse(gold, parsing_timeout=None),
                math_verify.parse(pred, parsing_timeout=None),
                timeout_seconds=None,
            )
        _math_verify = math_verify
        return _math_verify


# Pairs that exercise numbers, symbols, simplification, sets and intervals once at start-up.
_WARM_UP_PAIRS = (
    ("\\boxed{\\frac{1}{2}}", "\\boxed{0.5}"),
    ("\\boxed{x^2+2x+1}", "\\boxed{(x+1)^2}"),
    ("\\boxed{\\{1,2\\}}", "\\boxed{[1,2)}"),
    ("\\boxed{\\text{(C)}}", "\\boxed{10\\text{ cm}}"),
)
