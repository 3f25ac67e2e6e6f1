"""Invariants of final-answer extraction: which form wins, what is stripped, and that no text makes it
raise or run long."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttc.answers import ANSWER_FORMATS, extract_answer, extract_gold


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"nested \boxed{\frac{\sqrt{2}}{2}} here", r"\frac{\sqrt{2}}{2}"),
        (r"first \boxed{1}, then corrected: \boxed{2}", "2"),
        (r"\fbox{7}", "7"),
        (r"\boxed 5.", "5"),
        (r"$\boxed 5$ is it", "5"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\boxed{ (1, 2) }", "(1, 2)"),
        (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
    ],
)
def test_the_last_box_gives_the_answer(text, expected):
    assert extract_answer(text) == expected
    assert extract_answer(text, "boxed") == expected


@pytest.mark.parametrize("text", [r"\boxed{unclosed", r"\boxed{}", r"\boxed{   }", r"\boxedx{3}", "\\boxed", "\\fbox{"])
def test_an_unbalanced_empty_or_misspelled_box_gives_no_answer(text):
    assert extract_answer(text, "boxed") is None


def test_an_unbalanced_last_box_does_not_fall_back_to_an_earlier_box():
    assert extract_answer(r"\boxed{1} and then \boxed{2", "boxed") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", "42"),
        ("So the answer is: 3.5", "3.5"),
        ("The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
        ("Final Answer: The final answer is $18$. I hope it is correct.", "18"),
        ("the answer is **C**", "C"),
        ("The answer is $$x^2$$", "x^2"),
        ("the answer is 7 apples. Then more text.", "7 apples"),
        ("An answer is 1.\nThe answer is 2.\n", "2"),
    ],
)
def test_the_answer_is_gives_the_rest_of_its_sentence(text, expected):
    assert extract_answer(text, "the-answer-is") == expected
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("so 9 * 2 = 18\n#### 18", "18"), ("#### 1,000", "1000"), ("####  -3 ", "-3"), ("#### $1,234,567", "1234567")],
)
def test_gsm8k_marker_gives_the_number_without_thousands_separators(text, expected):
    assert extract_answer(text, "gsm8k") == expected
    assert extract_answer(text) == expected


def test_auto_prefers_a_box_then_the_gsm8k_marker_then_the_answer_is():
    assert extract_answer("The answer is 1. \\boxed{2}\n#### 3") == "2"
    assert extract_answer("The answer is 1.\n#### 3") == "3"
    assert extract_answer("The answer is 1.") == "1"


def test_a_named_format_tries_only_its_own_form():
    text = "The answer is 1.\n#### 3 \\boxed{2}"
    assert extract_answer("The answer is 1.", "boxed") is None
    assert extract_answer("The answer is 1.", "gsm8k") is None
    assert extract_answer(r"\boxed{2}", "the-answer-is") is None
    assert extract_answer(text, "last-number") == "2"


def test_the_last_number_is_taken_only_when_asked():
    text = "I had 3 apples and bought 4,500 more, so 4,503 in all"
    assert extract_answer(text) is None
    assert extract_answer(text, last_number_fallback=True) == "4503"
    assert extract_answer(text, "last-number") == "4503"
    assert extract_answer("no digits here", last_number_fallback=True) is None


@pytest.mark.parametrize(
    ("text", "expected"), [("1,2,3", "3"), ("5-3", "3"), ("it is -7", "-7"), ("x = 2.50.", "2.50")]
)
def test_the_last_number_keeps_sign_and_decimals_but_not_list_commas(text, expected):
    assert extract_answer(text, "last-number") == expected


def test_an_unknown_format_is_refused_with_the_valid_names():
    with pytest.raises(ValueError) as raised:
        extract_answer("\\boxed{1}", "latex")
    for name in ANSWER_FORMATS:
        assert name in str(raised.value)


@pytest.mark.parametrize(
    ("gold", "expected"),
    [
        ("Janet sells 9 eggs.\n#### 18", "18"),
        (r"The sum is $\boxed{\frac{3}{4}}$.", r"\frac{3}{4}"),
        ("  \\frac{3}{4} ", "\\frac{3}{4}"),
        ("The answer is 5", "The answer is 5"),  # a bare gold answer is never reinterpreted
        (18, "18"),
    ],
)
def test_a_gold_solution_is_extracted_and_a_gold_answer_is_only_stripped(gold, expected):
    assert extract_gold(gold) == expected


ADVERSARIAL_MEGABYTES = [
    "\\boxed{" * (1_000_000 // 7),
    "9" * 1_000_000,
    "1," * 500_000,
    "answer is " * 100_000,
    "\\boxed{" + "{" * 500_000 + "}" * 499_999,
    "\\boxedx" * 150_000,
    "#" * 1_000_000,
    "$" * 1_000_000,
]


@pytest.mark.parametrize("text", ADVERSARIAL_MEGABYTES, ids=lambda text: repr(text[:8]))
def test_a_megabyte_of_adversarial_text_is_scanned_within_a_second(text):
    started = time.monotonic()
    for fmt in ("auto", "last-number"):
        extract_answer(text, fmt, last_number_fallback=True)
    assert time.monotonic() - started < 1.0


_PLAIN_CHARS = st.characters(blacklist_characters="{}\\", blacklist_categories=("Cs",))
_plain_text = st.text(_PLAIN_CHARS, max_size=8)
_balanced = st.recursive(
    _plain_text,
    lambda inner: st.lists(inner | inner.map(lambda text: "{" + text + "}"), max_size=4).map("".join),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(max_size=40), content=_balanced, suffix=_plain_text)
def test_a_box_around_balanced_text_gives_back_that_text(prefix, content, suffix):
    text = prefix + " \\boxed{" + content + "}" + suffix
    assert extract_answer(text, "boxed") == (content.strip() or None)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200), fmt=st.sampled_from(ANSWER_FORMATS), fallback=st.booleans())
def test_extraction_never_raises_and_returns_a_stripped_answer_or_none(text, fmt, fallback):
    answer = extract_answer(text, fmt, fallback)
    assert answer is None or (isinstance(answer, str) and answer.strip() == answer and answer)


_MARKUP_HEAVY = st.text(st.sampled_from(list("\\{}$#0123456789,.- boxedfanswris\n")), max_size=200)


@settings(max_examples=300, deadline=None)
@given(text=_MARKUP_HEAVY, fmt=st.sampled_from(ANSWER_FORMATS))
def test_extraction_never_raises_on_markup_fragments(text, fmt):
    extract_answer(text, fmt, last_number_fallback=True)
    extract_gold(text)


@given(number=st.integers(min_value=-(10**12), max_value=10**12), noise=_plain_text)
def test_a_gsm8k_marker_with_thousands_separators_gives_the_integer(number, noise):
    text = noise.replace("#", "") + f"\n#### {number:,}"
    assert int(extract_answer(text, "gsm8k")) == number


@given(text=st.text(max_size=100))
def test_a_last_number_is_always_a_decimal_numeral(text):
    number = extract_answer(text, "last-number")
    if number is not None:
        float(number)
