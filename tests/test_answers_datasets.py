"""Invariants of grading on the real datasets (MATH-500, GSM8K) and on JSONL files of predictions.

The datasets live in shared/datasets beside the checkout; the tests that need them skip without them.
"""

import json
from pathlib import Path

import pytest

from ttc.answers import extract_gold, grade, grade_jsonl, is_equivalent, warm_up
from ttc.answers.deadline import call_with_deadline
from ttc.answers.equivalence import parse_answer
from ttc.errors import UsageError

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def read_dataset(name: str) -> list[dict]:
    path = DATASETS / name
    if not path.is_file():
        pytest.skip(f"{path} not found: the datasets sit in shared/ beside the checkout")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_math500_solutions_grade_equivalent_to_their_answers():
    rows = read_dataset("math500.jsonl")
    failures = []
    for row in rows:
        result = grade(row["solution"], row["answer"])
        if not result.correct:
            failures.append((row["unique_id"], result.pred_answer, result.gold_answer))
    agreement = 1 - len(failures) / len(rows)
    print(f"MATH-500 agreement {agreement:.3f} ({len(rows) - len(failures)}/{len(rows)})")
    for failure in failures:
        print("  disagreement:", failure)
    assert len(rows) == 500
    assert agreement >= 0.99


def test_every_math500_answer_parses_to_a_math_value_that_verifies_against_itself():
    """Beyond the text comparison: math-verify understands each gold answer (none is left as text)."""
    rows = read_dataset("math500.jsonl")
    math_verify = warm_up()

    def math_values(answer: str) -> list:
        return [value for value in parse_answer(answer) if not isinstance(value, str)]

    not_understood = []
    for row in rows:
        values = call_with_deadline(lambda row=row: math_values(row["answer"]), 5.0, on_timeout=[])
        if not values or not math_verify.verify(values, values, timeout_seconds=None):
            not_understood.append(row["answer"])
    print("answers math-verify does not understand:", not_understood)
    assert len(not_understood) <= 0.01 * len(rows)


def test_math500_answers_of_different_problems_are_rarely_equivalent():
    """Each answer against the next problem's answer: only genuinely equal pairs may match."""
    answers = [row["answer"] for row in read_dataset("math500.jsonl")]
    matches = [
        (pred, gold) for gold, pred in zip(answers, answers[1:] + answers[:1], strict=True) if is_equivalent(pred, gold)
    ]
    print("equivalent answers of different problems:", matches)
    assert len(matches) <= 0.01 * len(answers)


def test_every_gsm8k_gold_extracts_to_its_number():
    rows = read_dataset("gsm8k_test.jsonl")
    assert len(rows) == 1319
    for row in rows:
        marked = row["answer"].rsplit("####", 1)[1].strip()
        gold = extract_gold(row["answer"])
        assert gold is not None and float(gold) == float(marked.replace(",", "")), row["answer"]


def test_every_gsm8k_solution_grades_equivalent_to_its_marked_number():
    rows = read_dataset("gsm8k_test.jsonl")
    wrong = [row for row in rows if not grade(row["answer"], row["answer"].rsplit("####", 1)[1]).correct]
    assert not wrong


def test_a_bare_prediction_is_graded_as_the_answer_itself():
    result = grade("0.5", r"The area is $\boxed{\frac{1}{2}}$.")
    assert (result.pred_answer, result.gold_answer, result.correct) == ("0.5", r"\frac{1}{2}", True)


def test_a_solution_prediction_is_graded_by_its_extracted_answer():
    result = grade("Adding, we get 2 + 2 = 4.\n#### 4", 4)
    assert (result.pred_answer, result.gold_answer, result.correct) == ("4", "4", True)
    result = grade("I think it is 3 or maybe 5", "5", last_number_fallback=True)
    assert (result.pred_answer, result.correct) == ("5", True)
    assert grade("I think it is 3 or maybe 5", "5").correct is False


def test_an_empty_prediction_is_graded_wrong():
    result = grade("", "5")
    assert (result.pred_answer, result.correct) == (None, False)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_grade_jsonl_counts_correct_lines_and_skips_blank_ones(tmp_path):
    path = write_lines(
        tmp_path / "preds.jsonl",
        [
            json.dumps({"pred": r"so \boxed{\frac12}", "gold": "0.5"}),
            "",
            json.dumps({"pred": "The answer is 7.", "gold": "#### 7"}),
            json.dumps({"pred": r"\boxed{3}", "gold": 4}),
        ],
    )
    summary = grade_jsonl(path, "pred", "gold")
    assert summary == {"accuracy": pytest.approx(2 / 3), "correct": 2, "n": 3}


def test_grade_jsonl_of_an_empty_file_has_no_lines_and_zero_accuracy(tmp_path):
    path = write_lines(tmp_path / "empty.jsonl", [])
    assert grade_jsonl(path, "pred", "gold") == {"accuracy": 0.0, "correct": 0, "n": 0}


@pytest.mark.parametrize(
    ("lines", "named"),
    [
        (['{"pred": "1", "gold": "1"}', '{"pred": "1", "gold": '], ["bad.jsonl:2", "malformed JSON"]),
        (['{"pred": "1", "gold": "1"}', "[1, 2]"], ["bad.jsonl:2", "JSON object"]),
        (['{"pred": "1", "gold": "1"}', "", '{"prediction": "1", "gold": "1"}'], ["bad.jsonl:3", "'pred'"]),
        (['{"pred": "1"}'], ["bad.jsonl:1", "'gold'"]),
    ],
)
def test_grade_jsonl_names_the_file_line_and_key_of_a_bad_line(tmp_path, lines, named):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(UsageError) as raised:
        grade_jsonl(path, "pred", "gold")
    message = str(raised.value)
    assert "\n" not in message
    for part in named:
        assert part in message


def test_grade_jsonl_names_the_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"pred": "1", "gold": "1"}\n{"pred": "caf\xe9", "gold": "1"}\n')
    with pytest.raises(UsageError, match="latin1.jsonl:2"):
        grade_jsonl(path, "pred", "gold")


def test_grade_jsonl_of_a_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="missing.jsonl"):
        grade_jsonl(tmp_path / "missing.jsonl", "pred", "gold")
