"""Training examples for the two models as token ids with loss targets, and batching.

An example is (ids, targets): `targets[i]` is the token the model should predict after `ids[:i+1]`, or
-100 where nothing is learned (prompts, earlier attempts, padding). The PRM's targets sit at the step-tag
positions only ("+" or "-"), plus, on correct solutions, the step tokens themselves (see `prm_example`).
"""

from __future__ import annotations

import random
import re

import torch

from ..arith import apply_op, check_steps, solution_steps, split_steps
from .formats import (
    BAD_ID,
    GOOD_ID,
    PRM_SEPARATOR,
    PRM_TEMPLATE,
    STEP_DELIMITER,
    STEP_TAG,
    TAG_ID,
    VOCAB,
    policy_prompt,
    prm_tokens,
    revision_prompt,
)

IGNORE = -100
_OP_STEP = re.compile(r"^(-?\d+)([+-])(\d+)=(\S*)$")


def spaced(problem: str, rng: random.Random) -> str:
    """The problem with random spaces around some operators (whitespace is ignored in the task)."""
    out = []
    for ch in problem:
        if ch in "+-" and rng.random() < 0.5:
            out.append(" " + ch + " ")
        else:
            out.append(ch)
    return "".join(out)


def policy_example(problem: str, attempts: list[str] | None = None, prompt_problem: str | None = None):
    """BOS + prompt (or revision prompt with earlier attempts) + correct solution + EOS; learn the solution."""
    shown = prompt_problem or problem
    prompt = revision_prompt(shown, attempts) if attempts else policy_prompt(shown)
    p_ids = VOCAB.encode(prompt, add_bos=True)
    s_ids = VOCAB.encode(STEP_DELIMITER.join(solution_steps(problem))) + [VOCAB.eos_id]
    ids = p_ids + s_ids
    targets = [IGNORE] * (len(p_ids) - 1) + s_ids + [IGNORE]
    return ids, targets


def revision_example(problem: str, attempts: list[str], deviation_weight: float = 3.0):
    """`policy_example` with earlier attempts, plus per-target loss weights and negative targets.

    The solution line where an attempt first goes wrong weighs `deviation_weight` (that is where a
    revision must not copy), and the character where that line first differs from the right one gets the
    attempt's character as a negative target (an unlikelihood term in `train_step`): the revision is taught
    not to repeat the very token the attempt went wrong with. Returns (ids, targets, weights, negatives),
    negatives being IGNORE everywhere else.
    """
    ids, targets = policy_example(problem, attempts)
    steps = solution_steps(problem)
    weights = [1.0] * len(targets)
    negatives = [IGNORE] * len(targets)
    first = targets.index(next(t for t in targets if t != IGNORE))  # index of the first learned target
    starts = [0]
    for s in steps[:-1]:
        starts.append(starts[-1] + len(s) + len(STEP_DELIMITER))
    marked = set()
    for a in attempts:
        lines = split_steps(a, STEP_DELIMITER)
        j = next((i for i, s in enumerate(steps) if i >= len(lines) or lines[i].strip() != s), None)
        if j is None:
            continue
        marked.add(j)
        if j >= len(lines) or not lines[j].isascii():
            continue
        line, right = lines[j].strip(), steps[j]  # they differ: j is where the attempt went wrong
        k = next((i for i in range(min(len(line), len(right))) if line[i] != right[i]), min(len(line), len(right)))
        wrong_tok = ord(line[k]) if k < len(line) else ord(STEP_DELIMITER[0])
        pos = first + starts[j] + k
        if negatives[pos] == IGNORE and wrong_tok != targets[pos]:
            negatives[pos] = wrong_tok
    for j in marked:
        for k in range(starts[j], starts[j] + len(steps[j]) + 1):  # the line and its delimiter (or EOS)
            weights[first + k] = deviation_weight
    return ids, targets, weights, negatives


def prm_example(problem: str, steps: list[str], learn_steps: bool = False, learn_results: bool = False):
    """PRM input for `steps`; targets "+"/"-" at each tag from the exact cumulative labels.

    With `learn_steps` (only for correct solutions) the step tokens are learned too, which teaches the PRM
    the arithmetic it must check. With `learn_results` (for any solution) the digits after each "=" are
    learned as the true value of the step's own left side, up to the first digit the solution got wrong:
    dense supervision of exactly the computation a check needs, on the policy's own contexts.
    """
    ids, tags = prm_tokens(problem, steps)
    labels = check_steps(problem, steps, cumulative=True)
    targets = [IGNORE] * len(ids)
    for pos, good in zip(tags, labels):
        targets[pos] = GOOD_ID if good else BAD_ID
    if learn_steps:
        first = ids.index(ord("\n"), ids.index(ord("\n")) + 1)  # end of the template's last line
        for i in range(first, len(ids) - 1):
            # the step tokens up to each tag: the tag itself is not predicted, and the tag position's
            # target is its label, so neither is the first character of the next step
            if targets[i] == IGNORE and ids[i + 1] != TAG_ID and ids[i] != TAG_ID:
                targets[i] = ids[i + 1]
    if learn_results:
        for site in step_results(problem, steps):
            if site is None or site[0] is None:
                continue
            start, written, correct = site
            eq = start - 1  # the "=" token
            for k in range(len(correct)):
                if written[:k] != correct[:k] or eq + k >= len(ids):
                    break
                if targets[eq + k] == IGNORE:
                    targets[eq + k] = ord(correct[k])
    return ids, targets


def step_results(problem: str, steps: list[str]) -> list[tuple[int | None, str, str] | None]:
    """Per step of a PRM input: (the index of its written result's first token, the written result, the
    true value of the step's own left side), or None for a step that is not "a op b = c". Indices count one
    token per character, so they are None unless every step is ASCII."""
    pos = len(VOCAB.encode(PRM_TEMPLATE.format(problem=problem), add_bos=True))
    exact = all(st.isascii() for st in steps)
    out: list[tuple[int | None, str, str] | None] = []
    for st in steps:
        m = _OP_STEP.match(st)
        if m:
            true = str(apply_op(int(m.group(1)), m.group(2), int(m.group(3))))
            out.append((pos + m.start(4) if exact else None, m.group(4), true))
        else:
            out.append(None)
        pos += len(st) + len(VOCAB.encode(STEP_TAG)) + len(VOCAB.encode(PRM_SEPARATOR))
    return out


def tag_digit_targets(problem: str, steps: list[str], n_tail: int = 2) -> list[list[int]]:
    """Per step tag, the last `n_tail` characters (token ids) of the value the step should show: its own
    left side computed (for "85-19=67": 85-19 = 66, so "6", "6"), or for the answer line the total the
    step before it shows. Learned at the tag as well as "+"/"-", they make the tag position compute the
    true result next to the written one, which is what a check compares. Empty where there is none."""
    out, last = [], None
    for site in step_results(problem, steps):
        if site is not None:
            value = site[2]
            last = site[1] if re.fullmatch(r"-?\d+", site[1]) else None
        else:
            value, last = last, None
        out.append([ord(c) for c in value[-n_tail:]] if value else [])
    return out


def digit_flags(problem: str, steps: list[str]) -> list[tuple[int, int]]:
    """(token position, "+" or "-") at each result digit of each step of the PRM input: whether the result
    written up to that digit still agrees with the step's own left side (at the last digit: whether it is
    all of it). Learned there, beside the next digit, they put a local, fixed-offset comparison (the
    digit just read against the one predicted a position earlier) where the model computes anyway; the
    tag a few tokens on can then read the flag. Inference reads only the tags, so these cost nothing."""
    out = []
    for site in step_results(problem, steps):
        if site is None or site[0] is None:
            continue
        start, written, true = site
        for k in range(len(written)):
            ok = written == true if k == len(written) - 1 else written[: k + 1] == true[: k + 1]
            out.append((start + k, GOOD_ID if ok else BAD_ID))
    return out


def collate(examples: list[tuple], multiple: int = 16):
    """Right-pad to a common length (a multiple of `multiple`): ids (B, T) and targets (B, T), then, when
    the examples carry them, weights (B, T) and negative targets (B, T)."""
    T = max(len(e[0]) for e in examples)
    T = (T + multiple - 1) // multiple * multiple
    ids = torch.zeros(len(examples), T, dtype=torch.long)
    tg = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    w = torch.ones(len(examples), T) if len(examples[0]) >= 3 else None
    neg = torch.full((len(examples), T), IGNORE, dtype=torch.long) if len(examples[0]) >= 4 else None
    for b, e in enumerate(examples):
        ids[b, : len(e[0])] = torch.tensor(e[0])
        tg[b, : len(e[1])] = torch.tensor(e[1])
        if w is not None:
            w[b, : len(e[2])] = torch.tensor(e[2])
        if neg is not None:
            neg[b, : len(e[3])] = torch.tensor(e[3])
    return (ids, tg) + tuple(x for x in (w, neg) if x is not None)
