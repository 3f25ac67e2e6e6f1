"""Find the final answer in a solution text: boxed, "#### N", "the answer is ...", or the last number.

A model's solution ends with its answer in one of a few conventional forms. This module pulls that
answer out as a string and leaves deciding whether it is right to `equivalence`.

Every scan here is at most linear in the length of the text: the last `\\boxed` is found with `rfind`
and its braces matched by one pass of a counter, the last number is read from the tail only, and no
regular expression can backtrack more than a few characters, so a megabyte of adversarial text
(`\\boxed{\\boxed{...`, a million digits) is scanned in well under a second.
Malformed text never raises: an unbalanced box yields no answer from that form.
"""

from __future__ import annotations

import re

# The answer forms, by the name `fmt` takes. "auto" tries boxed, then "#### N", then "the answer is".
ANSWER_FORMATS = ("auto", "boxed", "the-answer-is", "gsm8k", "last-number")

_BOX_COMMANDS = ("\\boxed", "\\fbox")

# "the answer is", "The final answer is:", "answer is" (the last one in the text counts).
_ANSWER_IS = re.compile(r"answer\s{1,20}is\b\s{0,20}:?", re.IGNORECASE)
# Minerva-style sign-off after the answer: "The final answer is $5$. I hope it is correct."
_SIGN_OFF = re.compile(r"\s*I hope it is correct\.?\s*$", re.IGNORECASE)
# A decimal number: a sign unless it follows a word or ")" (so "5-3" ends in "3"), optional thousands
# separators ("1,234", never "1,2"), optional decimals. Every alternative is deterministic: no backtracking.
_NUMBER = re.compile(r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?", re.ASCII)
_NUMBER_CHARS = frozenset("0123456789,.-")
# A "number" longer than this is read from its last this-many characters.
MAX_NUMBER_CHARS = 1000
# A comma between digits that separates thousands: "1,000" -> "1000", "(1,2)" is left alone.
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def extract_answer(text: str, fmt: str = "auto", last_number_fallback: bool = False) -> str | None:
    """Return the final answer written in `text`, or None when it has none in the asked-for form.

    fmt: "auto" tries a `\\boxed{}`/`\\fbox{}`, then a GSM8K "#### N" line, then "the answer is ...";
    "boxed", "gsm8k" and "the-answer-is" try only that form; "last-number" takes the last number.
    last_number_fallback: when no form matched, take the last number in the text instead of None.
    """
    if fmt not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer format {fmt!r}; valid formats: {', '.join(ANSWER_FORMATS)}")
    if not isinstance(text, str):
        return None
    finders = {
        "auto": (last_boxed_content, gsm8k_answer, answer_is_answer),
        "boxed": (last_boxed_content,),
        "gsm8k": (gsm8k_answer,),
        "the-answer-is": (answer_is_answer,),
        "last-number": (last_number,),
    }[fmt]
    for find in finders:
        answer = find(text)
        if answer:
            return answer
    if last_number_fallback and fmt != "last-number":
        return last_number(text)
    return None


def extract_gold(text_or_answer: str | int | float) -> str:
    """Return the gold answer of a dataset row: extracted when it is a full solution, else stripped.

    A value holding "####" or a box (GSM8K's `answer`, MATH's `solution`) is a worked solution and its
    final answer is extracted; anything else (MATH's `answer`, a plain number) is already the answer.
    """
    text = str(text_or_answer)
    if "####" in text or any(command in text for command in _BOX_COMMANDS):
        extracted = extract_answer(text, "auto")
        if extracted is not None:
            return extracted
    return text.strip()


def last_boxed_content(text: str) -> str | None:
    """Return the stripped content of the last `\\boxed{...}` or `\\fbox{...}`; None if unbalanced.

    `\\boxed 5` (the command, a space, then a token) is read as the token up to the next space or `$`.
    Only the last box counts: an earlier box is an earlier, superseded answer.
    """
    start, command = -1, ""
    for candidate in _BOX_COMMANDS:
        position = _rfind_command(text, candidate)
        if position > start:
            start, command = position, candidate
    if start < 0:
        return None
    after = start + len(command)
    if after < len(text) and text[after] == "{":
        content = braced_content(text, after)
    else:
        content = _unbraced_token(text, after)
    if content is None:
        return None
    return content.strip() or None


def _rfind_command(text: str, command: str) -> int:
    """Position of the last `command` that is not the start of a longer name (`\\boxedfoo`)."""
    end = len(text)
    while True:
        position = text.rfind(command, 0, end)
        if position < 0:
            return -1
        after = position + len(command)
        if after >= len(text) or not text[after].isalpha():
            return position
        end = position + len(command) - 1


def braced_content(text: str, open_brace: int) -> str | None:
    """The text inside the brace group opening at `open_brace`; None when it never closes.

    A backslash escapes the next character, so `\\{` and `\\}` do not count as braces.
    """
    depth = 0
    index = open_brace
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : index]
        index += 1
    return None


def _unbraced_token(text: str, after: int) -> str | None:
    """For `\\boxed 5`: the token after the spaces, up to the next space or `$`, no trailing period."""
    rest = text[after : after + 1000]
    if not rest[:1].isspace():
        return None
    token = rest.lstrip().split(None, 1)[0] if rest.strip() else ""
    token = token.split("$", 1)[0].rstrip(".")
    return token or None


def gsm8k_answer(text: str) -> str | None:
    """Return the number after the last "####", thousands commas removed ("#### 1,000" -> "1000")."""
    position = text.rfind("####")
    if position < 0:
        return None
    line = text[position + 4 :].lstrip("#").split("\n", 1)[0]
    answer = line.strip().strip("$").strip().rstrip(".").strip()
    answer = _THOUSANDS_COMMA.sub("", answer)
    return answer or None


def answer_is_answer(text: str) -> str | None:
    """Return what follows the last "the answer is" on its line, without `$...$` or a final period."""
    last = None
    for last in _ANSWER_IS.finditer(text):  # noqa: B007 - only the last match is wanted
        pass
    if last is None:
        return None
    line = text[last.end() :].split("\n", 1)[0]
    line = _SIGN_OFF.sub("", line).strip().strip("*").strip()
    boxed = last_boxed_content(line)
    if boxed is not None:
        return boxed
    if line.startswith("$$"):
        answer = line[2:].split("$$", 1)[0]
    elif line.startswith("$"):
        answer = line[1:].split("$", 1)[0]
    elif line.startswith("\\(") and "\\)" in line:
        answer = line[2:].split("\\)", 1)[0]
    else:
        answer = _first_sentence(line)
    answer = answer.strip().rstrip(".").strip()
    return answer or None


def _first_sentence(line: str) -> str:
    """The line up to the first period that ends a sentence (a period not inside a number)."""
    for index, char in enumerate(line):
        if char == "." and (index + 1 == len(line) or line[index + 1].isspace()):
            return line[:index]
    return line


def last_number(text: str) -> str | None:
    """Return the last number in the text, thousands commas removed ("1,234.5" -> "1234.5").

    Only the run of number characters that holds the last digit is scanned, and at most its last
    `MAX_NUMBER_CHARS` characters, so the cost does not grow with the text.
    """
    end = max(text.rfind(digit) for digit in "0123456789") + 1
    if end == 0:
        return None
    start = end
    while start > 0 and end - start < MAX_NUMBER_CHARS and text[start - 1] in _NUMBER_CHARS:
        start -= 1
    last = None
    for last in _NUMBER.finditer(text, start, end):  # noqa: B007 - only the last match is wanted
        pass
    return last.group().replace(",", "") if last is not None else None
