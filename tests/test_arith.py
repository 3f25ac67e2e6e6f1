"""Invariants of the `arith` task: generator, exact evaluation, step checker, parsing, shipped dataset."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttc.builtin.arith import (
    HELDOUT_PATH,
    canonical,
    check_solution,
    check_steps,
    count_ops,
    evaluate,
    generate_problems,
    heldout_problems,
    iter_problems,
    parse_boxed,
    parse_problem,
    prefix_good,
    read_dataset,
    solution_steps,
    solution_text,
    split_steps,
    write_sample_dataset,
)

terms = st.lists(st.tuples(st.sampled_from("+-"), st.integers(1, 99)), min_size=1, max_size=8)


def build(first: int, rest: list[tuple[str, int]]) -> str:
    return str(first) + "".join(op + str(n) for op, n in rest)


def test_generated_problems_are_in_range():
    for p in generate_problems(2000, seed=3):
        first, rest = parse_problem(p)
        assert 1 <= len(rest) <= 8
        assert all(1 <= n <= 99 for n in [first] + [n for _, n in rest])
        assert p == canonical(p)


def test_generator_is_uniform_over_ops_by_default():
    counts = Counter(count_ops(p) for p in generate_problems(8000, seed=1))
    assert set(counts) == set(range(1, 9))
    assert all(850 < c < 1150 for c in counts.values())


def test_generator_respects_ops_argument():
    assert {count_ops(p) for p in generate_problems(200, ops=3, seed=0)} == {3}
    assert {count_ops(p) for p in generate_problems(300, ops=[1, 8], seed=0)} == {1, 8}
    with pytest.raises(ValueError):
        generate_problems(1, ops=9)
    with pytest.raises(ValueError):
        generate_problems(1, ops=0)


def test_same_seed_gives_same_problems_and_other_seed_differs():
    assert generate_problems(50, seed=11) == generate_problems(50, seed=11)
    assert generate_problems(50, seed=11) != generate_problems(50, seed=12)


def test_generator_never_yields_excluded_problems():
    held = heldout_problems()
    one_op = [r["problem"] for r in read_dataset() if r["ops"] == 1]
    stream = iter_problems(ops=1, seed=5, exclude=held)
    drawn = {next(stream) for _ in range(20000)}  # a large share of all 19,602 one-operator problems
    assert not drawn & set(one_op)


@given(st.integers(1, 99), terms)
def test_evaluate_equals_independent_sum(first, rest):
    expected = first + sum(n if op == "+" else -n for op, n in rest)
    assert evaluate(build(first, rest)) == expected


@given(st.integers(1, 99), terms, st.randoms())
def test_whitespace_is_ignored(first, rest, rnd):
    p = build(first, rest)
    spaced = "".join(c + (" " * rnd.randint(0, 2)) for c in p)
    assert evaluate(" \t" + spaced + "\n") == evaluate(p)
    assert canonical(spaced) == p


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "5",
        "0+1",
        "1+0",
        "100+1",
        "1++2",
        "+1+2",
        "-1+2",
        "1+2-",
        "07+1",
        "1*2",
        "1+2=3",
        "1+x",
        "1+2+3+4+5+6+7+8+9+10",
        "١+2",
        "3.0+1",
    ],
)
def test_parse_problem_rejects_malformed(bad):
    with pytest.raises(ValueError):
        parse_problem(bad)


def test_parse_problem_rejects_non_strings():
    with pytest.raises(ValueError):
        parse_problem(12)  # type: ignore[arg-type]


def test_solution_steps_example():
    assert solution_steps("37+48-19") == ["37+48=85", "85-19=66", "\\boxed{66}"]
    assert solution_text("5-9") == "5-9=-4\n\\boxed{-4}"
    assert parse_boxed(solution_text("5-9-90")) == -94


@given(st.integers(1, 99), terms)
def test_correct_solution_is_all_right(first, rest):
    p = build(first, rest)
    steps = solution_steps(p)
    assert len(steps) == len(rest) + 1
    assert check_steps(p, steps) == [True] * len(steps)
    assert check_solution(p, solution_text(p))
    assert parse_boxed(steps[-1]) == evaluate(p)


@given(st.integers(1, 99), terms, st.data())
def test_checker_flags_exactly_the_wrong_steps(first, rest, data):
    """Corrupt some results; later steps continue from the written total, so only corrupted ones are wrong."""
    p = build(first, rest)
    bad = data.draw(st.sets(st.integers(0, len(rest))))
    steps, total = [], first
    for i, (op, n) in enumerate(rest):
        value = total + n if op == "+" else total - n
        if i in bad:
            value += data.draw(st.sampled_from([-10, -1, 1, 2, 100]))
        steps.append(f"{total}{op}{n}={value}")
        total = value
    steps.append(f"\\boxed{{{total + (7 if len(rest) in bad else 0)}}}")
    flags = check_steps(p, steps)
    assert flags == [i not in bad for i in range(len(steps))]
    assert check_steps(p, steps, cumulative=True) == prefix_good(flags)
    assert check_solution(p, "\n".join(steps)) == (not bad)


@given(st.lists(st.booleans()))
def test_prefix_good_is_good_only_if_all_before_are_right(flags):
    good = prefix_good(flags)
    assert good == [all(flags[: i + 1]) for i in range(len(flags))]


def test_checker_wrong_operand_operator_and_layout():
    p = "37+48-19"
    assert check_steps(p, ["37+47=84", "84-19=65", "\\boxed{65}"]) == [False, True, True]
    assert check_steps(p, ["37-48=-11", "-11-19=-30", "\\boxed{-30}"]) == [False, True, True]
    assert check_steps(p, ["38+48=86", "86-19=67", "\\boxed{67}"]) == [False, True, True]
    assert check_steps(p, ["37+48=85", "\\boxed{85}"]) == [True, False]  # answer too early
    assert check_steps(p, ["37+48=85", "85-19=66", "66-1=65"]) == [True, True, False]  # no answer step
    assert check_steps(p, ["37+48=85", "85-19=66", "\\boxed{66}", "\\boxed{66}"]) == [True, True, True, False]
    assert check_steps(p, ["37+48=085", "85-19=66", "\\boxed{66}"]) == [False, True, True]
    assert check_steps(p, [" 37 + 48 = 85", "85-19=66 ", "\\boxed{ 66 }"]) == [True, True, True]
    assert check_steps(p, ["garbage", "85-19=66", "\\boxed{66}"]) == [False, True, True]
    assert check_steps(p, ["37+48=85", "85-19=66", "\\boxed{66}"], cumulative=True) == [True] * 3
    assert check_steps(p, ["37+48=84", "84-19=65", "\\boxed{65}"], cumulative=True) == [False] * 3
    assert check_steps(p, []) == []
    with pytest.raises(ValueError):
        check_steps("37+", ["37"])


def test_split_steps_drops_blank_pieces():
    assert split_steps("a\n\nb\n") == ["a", "b"]
    assert split_steps("a ки\nb ки\n") == ["a ки", "b ки"]


def test_shipped_dataset_is_reproduced_by_write_sample_dataset(tmp_path):
    out = write_sample_dataset(tmp_path / "arith500.jsonl")
    assert out.read_bytes() == HELDOUT_PATH.read_bytes()


def test_shipped_dataset_is_valid_and_balanced():
    rows = read_dataset()
    assert len(rows) == 500
    assert len({r["problem"] for r in rows}) == 500
    assert len({r["id"] for r in rows}) == 500
    counts = Counter(r["ops"] for r in rows)
    assert sorted(counts) == list(range(1, 9)) and min(counts.values()) >= 62
    for line in HELDOUT_PATH.read_text().splitlines():
        assert set(json.loads(line)) == {"id", "problem", "answer", "ops"}


def test_evaluate_never_calls_eval(monkeypatch):
    import builtins

    def refuse(*a, **k):
        raise AssertionError("eval used")

    monkeypatch.setattr(builtins, "eval", refuse)
    assert evaluate("1+2-3") == 0
    assert evaluate(build(9, [("-", 99)] * 8)) == 9 - 792


def test_random_problem_strings_roundtrip():
    rng = random.Random(0)
    for _ in range(200):
        first = rng.randint(1, 99)
        rest = [(rng.choice("+-"), rng.randint(1, 99)) for _ in range(rng.randint(1, 8))]
        assert parse_problem(build(first, rest)) == (first, rest)


def test_a_dataset_made_to_exclude_the_shipped_500_shares_none_of_them(tmp_path):
    from ttc.builtin.arith.__main__ import main

    assert main(["--n", "300", "--seed", "11", "--out", str(tmp_path / "cal.jsonl")]) == 0
    records = read_dataset(tmp_path / "cal.jsonl")
    assert len(records) == 300 and records[0]["id"] == "arith-s11-000"
    assert not {canonical(r["problem"]) for r in records} & heldout_problems()
    assert sorted({r["ops"] for r in records}) == list(range(1, 9))
