"""Final answers: extract them from solution texts, and decide whether two are the same answer.

    extract_answer(text, fmt="auto", last_number_fallback=False) -> str | None
    extract_gold(text_or_answer) -> str
    is_equivalent(pred, gold, timeout_s=5.0) -> bool
    grade(pred_text, gold, fmt="auto", last_number_fallback=False, timeout_s=5.0) -> GradeResult
    grade_jsonl(path, pred_key, gold_key, fmt="auto", last_number_fallback=False, timeout_s=5.0) -> dict

Equivalence uses math-verify under a time bound and never lets answer text reach an `eval`; see
`ttc.answers.equivalence` for how.
"""

from ttc.answers.equivalence import is_equivalent, warm_up
from ttc.answers.extract import ANSWER_FORMATS, extract_answer, extract_gold
from ttc.answers.grading import GradeResult, grade, grade_jsonl

__all__ = [
    "ANSWER_FORMATS",
    "GradeResult",
    "extract_answer",
    "extract_gold",
    "grade",
    "grade_jsonl",
    "is_equivalent",
    "warm_up",
]
