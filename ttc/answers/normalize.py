"""Normalize an answer as text, for the comparison made before (and instead of) math-verify.

Two answers that normalize to the same non-empty string are equivalent without any parsing: this is
the fast path for identical answers and the whole decision for answers that math-verify cannot or must
not parse (text answers it does not understand, answers too big to evaluate). The rules therefore only
remove what never changes an answer's meaning: spacing, `\\left`/`\\right`, `\\dfrac` spelling, `\\text`
wrappers, degree signs, percent signs, dollar signs, a final period, thousands separators in a number.
`drop_unit_words` also turns "5 dollars" into "5" (it is applied before math-verify too).
"""

from __future__ import annotations

import re

from ttc.answers.extract import braced_content

# LaTeX that only changes spacing or sizing.
_SPACING = re.compile(r"\\left\b|\\right\b|\\[!,;:> ]|\\quad\b|\\qquad\b|~|\\displaystyle\b")
# Degree and percent marks: `^\circ`, `^{\circ}`, `°`, `\degree`, `\%`, `%`.
_MARKS = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree\b|\\?%")
# `\text{...}` and friends with no braces inside: keep the content.
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_FRACTION_SPELLING = re.compile(r"\\[dt]frac\b")
_DOLLAR = re.compile(r"\\\$|\$")
_WHITESPACE = re.compile(r"\s+")
# A whole answer that is a number written with thousands separators: "1,000", "-12,345.5".
_THOUSANDS_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
# A number followed by plain words of three letters or more: "5 dollars", "12 red apples.".
# (Shorter words are left alone: "2 x" is the product 2x, and math-verify already drops "cm", "m".)
_NUMBER_THEN_WORDS = re.compile(r"\s*(-?\d[\d,]*(?:\.\d+)?)(?:\s+[A-Za-z]{3,}){1,4}\s*\.?\s*")


def drop_unit_words(answer: str) -> str:
    """ "5 dollars" -> "5": a number followed only by up to four plain words keeps just the number."""
    match = _NUMBER_THEN_WORDS.fullmatch(answer)
    return match.group(1) if match else answer


def normalize_answer_text(answer: str) -> str:
    """Return the answer with meaning-preserving LaTeX noise removed (see module docstring)."""
    text = answer.strip()
    text = _unwrap_boxed(text)
    text = text.replace("{,}", ",")
    text = _SPACING.sub("", text)
    text = _MARKS.sub("", text)
    text = _FRACTION_SPELLING.sub(r"\\frac", text)
    text = text.replace("\\varnothing", "\\emptyset")
    for _ in range(3):  # nested wrappers such as \text{\textbf{A}}
        text = _TEXT_WRAPPER.sub(r"\1", text)
    text = _DOLLAR.sub("", text)
    text = _WHITESPACE.sub("", text)
    text = text.rstrip(".")
    if _THOUSANDS_NUMBER.fullmatch(text):
        text = text.replace(",", "")
    return text


def _unwrap_boxed(text: str) -> str:
    """`\\boxed{X}` spanning the whole answer becomes X."""
    for command in ("\\boxed", "\\fbox"):
        if text.startswith(command + "{") and text.endswith("}"):
            content = braced_content(text, len(command))
            if content is not None and len(content) == len(text) - len(command) - 2:
                return content.strip()
    return text
