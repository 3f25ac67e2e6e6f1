"""Measurements of the built-in pair on held-out problems, with torch generation (batched).

Correctness of a solution is its `\\boxed{}` answer equal to the problem's value (as `ttc grade` would
decide); the PRM's step labels use the stricter exact step checker.
"""

from __future__ import annotations

from collections import Counter

from ..arith import count_ops, evaluate, parse_boxed
from .formats import VOCAB, policy_prompt, revision_prompt
from .model import Llama
from .sample import generate

MAX_NEW = 160  # longest correct solution is ~130 tokens


def is_correct(problem: str, text: str) -> bool:
    return parse_boxed(text) == evaluate(problem)


def solve(
    model: Llama,
    problems: list[str],
    temperature: float = 0.0,
    n: int = 1,
    seed: int = 0,
    attempts: list[list[str]] | None = None,
    batch_size: int = 256,
) -> list[list[str]]:
    """`n` solutions per problem (texts); with `attempts`, revisions conditioned on those attempts."""
    prompts = []
    for i, p in enumerate(problems):
        text = revision_prompt(p, attempts[i]) if attempts else policy_prompt(p)
        prompts += [VOCAB.encode(text, add_bos=True)] * n
    outs = generate(model, prompts, MAX_NEW, temperature, seed, batch_size)
    texts = [VOCAB.decode(o) for o in outs]
    return [texts[i * n : (i + 1) * n] for i in range(len(problems))]


def by_ops(problems: list[str], values: list[float]) -> dict:
    """Mean of `values` per number of operators, plus "all"."""
    groups: dict = {}
    for p, v in zip(problems, values):
        groups.setdefault(count_ops(p), []).append(v)
    table = {k: sum(v) / len(v) for k, v in sorted(groups.items())}
    table["all"] = sum(values) / max(1, len(values))
    return table


def majority(problem: str, texts: list[str]) -> bool:
    """Majority vote over the boxed answers (ties: the first answer to reach the top count)."""
    answers = [parse_boxed(t) for t in texts]
    answers = [a for a in answers if a is not None]
    if not answers:
        return False
    counts = Counter(answers)
    top = max(counts.values())
    pick = next(a for a in answers if counts[a] == top)
    return pick == evaluate(problem)


def format_table(rows: dict[str, dict]) -> str:
    """Rows of by-ops tables as fixed-width text (percent)."""
    keys = [k for k in next(iter(rows.values())).keys()]
    head = f"{'':<22}" + "".join(f"{str(k):>7}" for k in keys)
    lines = [head]
    for name, t in rows.items():
        lines.append(f"{name:<22}" + "".join(f"{100 * t[k]:>7.1f}" for k in keys))
    return "\n".join(lines)
