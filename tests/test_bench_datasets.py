"""Reading bench datasets: the shapes people have are detected, gold answers grade as the datasets mean them,
and every kind of bad line is reported with its line number (skipped, or fatal with strict)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttc.answers import extract_gold
from ttc.bench.datasets import read_dataset
from ttc.errors import UsageError

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_math500_shape_uses_unique_id_answer_and_difficulty():
    ds = read_dataset(FIXTURES / "math500_head.jsonl")
    assert ds.shape == "math" and ds.keys.id == "unique_id" and ds.keys.answer == "answer"
    assert [p.id for p in ds.problems][:2] == ["test/precalculus/807.json", "test/intermediate_algebra/1994.json"]
    assert ds.problems[0].gold == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert all(set(p.difficulty) == {"level", "subject"} for p in ds.problems)
    assert ds.problems[0].difficulty == {"level": 2, "subject": "Precalculus"}
    assert not ds.skipped


def test_gsm8k_shape_ids_are_line_numbers_and_gold_is_the_number_after_hashes():
    ds = read_dataset(FIXTURES / "gsm8k_head.jsonl")
    assert ds.shape == "gsm8k" and ds.keys.problem == "question" and ds.keys.id is None
    assert [p.id for p in ds.problems] == ["1", "2", "3", "4"]
    assert extract_gold(ds.problems[0].gold) == "18"  # Janet's ducks
    assert all(p.difficulty == {} for p in ds.problems)


def test_arith_shape_uses_id_and_ops():
    ds = read_dataset(FIXTURES / "arith_head.jsonl")
    assert ds.shape == "arith" and ds.keys.id == "id"
    assert ds.problems[0].id == "arith-000" and ds.problems[0].gold == -43
    assert ds.problems[0].difficulty == {"ops": 5}


def test_explicit_keys_override_detection(tmp_path):
    f = write_lines(tmp_path / "q.jsonl", [{"q": "1+1", "a": "2", "key": "x1"}, {"q": "2+2", "a": 4, "key": "x2"}])
    with pytest.raises(UsageError, match="--problem-key"):
        read_dataset(f)
    ds = read_dataset(f, problem_key="q", answer_key="a", id_key="key")
    assert [(p.id, p.text, p.gold) for p in ds.problems] == [("x1", "1+1", "2"), ("x2", "2+2", 4)]


def test_the_same_content_has_the_same_hash_and_a_change_changes_it(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [{"problem": "1+1", "answer": 2}])
    b = write_lines(tmp_path / "b.jsonl", [{"problem": "1+1", "answer": 2}])
    assert read_dataset(a).sha256 == read_dataset(b).sha256
    write_lines(b, [{"problem": "1+1", "answer": 3}])
    assert read_dataset(a).sha256 != read_dataset(b).sha256


BAD_LINES = [
    ("not json at all", "not valid JSON"),
    ('["a", "list"]', "not an object"),
    ({"problem": "3+3", "id": "z"}, "no 'answer' key"),
    ({"problem": "3+3", "answer": 6}, "no 'id' key"),
    ({"problem": "", "answer": 1, "id": "z"}, "'problem' is empty"),
    ({"problem": "3+3", "answer": None, "id": "z"}, "'answer' is empty"),
    ({"problem": {"nested": 1}, "answer": 1, "id": "z"}, "'problem' is empty or not text"),
    ({"problem": "3+3", "answer": 6, "id": [1]}, "'id' is empty or not text or an integer"),
    ({"problem": "3+3", "answer": 6, "id": "a"}, "duplicate id 'a' (first on line 1)"),
]


@pytest.mark.parametrize("line,why", BAD_LINES)
def test_a_malformed_line_is_reported_with_its_number_and_skipped(tmp_path, line, why):
    f = write_lines(
        tmp_path / "d.jsonl",
        [{"problem": "1+1", "answer": 2, "id": "a"}, "", line, {"problem": "2+2", "answer": 4, "id": "b"}],
    )
    ds = read_dataset(f)
    assert [p.id for p in ds.problems] == ["a", "b"]
    assert len(ds.skipped) == 1 and f"{f}:3: " in ds.skipped[0] and why in ds.skipped[0], ds.skipped


@pytest.mark.parametrize("line,why", BAD_LINES[:3])
def test_strict_makes_a_malformed_line_fatal(tmp_path, line, why):
    f = write_lines(tmp_path / "d.jsonl", [{"problem": "1+1", "answer": 2, "id": "a"}, line])
    with pytest.raises(UsageError, match=f"{f}:2: .*{why}"):
        read_dataset(f, strict=True)


def test_a_line_that_is_not_utf8_is_reported(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"problem": "1+1", "answer": 2}\n{"problem": "\xff", "answer": 1}\n')
    ds = read_dataset(f)
    assert len(ds.problems) == 1 and ":2: not UTF-8" in ds.skipped[0]


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda d: d / "missing.jsonl", "not found"),
        (lambda d: d, "is a folder"),
        (lambda d: write_lines(d / "empty.jsonl", []), "is empty"),
        (lambda d: write_lines(d / "blank.jsonl", ["", "   "]), "is empty"),
        (lambda d: write_lines(d / "junk.jsonl", ["junk", "{"]), "no valid problem"),
        (lambda d: write_lines(d / "keys.jsonl", [{"x": 1}]), "--problem-key"),
    ],
)
def test_unusable_files_are_usage_errors_naming_them(tmp_path, make, needle):
    with pytest.raises(UsageError, match=needle) as e:
        read_dataset(make(tmp_path))
    assert "\n" not in str(e.value)
