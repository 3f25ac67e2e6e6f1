"""The RLHFlow chat format: each step is a user turn and the PRM answers with its good or bad token; a step's
score is P(good) / (P(good) + P(bad)) at the assistant's reply.

In step-wise search each branch feeds only its new turn (the conversation with one more step extends the one
before it, and the problem is tokenized apart so all branches share it); a chat template that rewrites
earlier turns as turns are added falls back to rescoring the whole conversation (`_RenderedScorer`).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..engine.base import BranchSet, Engine, Usage
from ..errors import UsageError
from ..presets import PRMConfig
from .aggregate import get_aggregation
from .reward import RewardModel, StepScorer, TextScorer, single_token, two_way


class RLHFlowPRM(RewardModel):
    """RLHFlow-style chat PRM: each step is a user turn (the first carries the problem), each assistant
    turn is the good token; a step's score is P(good) / (P(good) + P(bad)) where its assistant reply
    begins. Rendered with the PRM's own chat template from its GGUF metadata."""

    MARK = "<<ttc-assistant-reply>>"

    def __init__(self, engine: Engine, cfg: PRMConfig, delimiter: str, source: str = "the preset"):
        from ..prompts import render_chat

        self.engine, self.cfg, self.delimiter, self.source = engine, cfg, delimiter, source
        self.aggregation = cfg.aggregation
        self.usage = Usage()
        get_aggregation(cfg.aggregation)
        self.good_id = single_token(engine, cfg.good_token, "good token", source)
        self.bad_id = single_token(engine, cfg.bad_token, "bad token", source)
        self._render = render_chat
        self._head: tuple[str, str] | None = None  # (problem, head) of the last `head` call
        self.tokens("1", ["x"])  # fails now, with a usage error, if the template cannot be used

    def _parts(self, problem: str, steps: Sequence[str]) -> list[str]:
        """The rendered conversation split at the replies: len(steps) + 1 texts."""
        messages = []
        for k, step in enumerate(steps):
            text = step[: -len(self.delimiter)] if self.delimiter and step.endswith(self.delimiter) else step
            text = text.replace(self.MARK, "").strip() or "."
            messages.append({"role": "user", "content": f"{problem} {text}" if k == 0 else text})
            messages.append({"role": "assistant", "content": self.MARK})
        parts = self._render(self.engine, messages, add_generation_prompt=False).split(self.MARK)
        if len(parts) != len(steps) + 1:
            raise UsageError(f"{self.source}: the PRM's chat template does not keep assistant replies verbatim")
        return parts

    def head(self, problem: str) -> str:
        """The text every conversation of a problem begins with: the template up to and with the problem
        (tokenized apart from the first step, so all branches of a search can share it). Kept for the last
        problem asked: `tokens` needs it for every step a search scores."""
        cached = self._head
        if cached is not None and cached[0] == problem:
            return cached[1]
        first = self._parts(problem, ["."])[0]
        at = first.find(problem.strip())
        head = first[: at + len(problem.strip())] if at >= 0 else ""
        self._head = (problem, head)
        return head

    def tokens(self, problem: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids of the conversation and, per step, the position whose next token is the reply."""
        parts = self._parts(problem, steps)
        head = self.head(problem) if steps else ""
        ids: list[int] = []
        positions: list[int] = []
        if head and parts[0].startswith(head):
            ids += self.engine.tokenize(head, add_bos=True, special=True)
            parts = [parts[0][len(head) :], *parts[1:]]
        for i, part in enumerate(parts):
            ids += self.engine.tokenize(part, add_bos=(i == 0 and not ids), special=True)
            if i < len(steps):
                positions.append(len(ids) - 1)
                ids.append(self.good_id)
        return ids, positions

    def score(self, problem: str, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        out: list[list[float]] = [[] for _ in solutions]
        todo = [i for i, s in enumerate(solutions) if s]
        if not todo:
            return out
        encoded = [self.tokens(problem, solutions[i]) for i in todo]
        common = _common_prefix([ids for ids, _ in encoded])
        common = min([common] + [pos[0] for _, pos in encoded])  # every read position lies in the suffix
        with self.charged():
            lps = self.engine.logprobs_at(
                [*encoded[0][0][:common]],
                [ids[common:] for ids, _ in encoded],
                [[p - common for p in pos] for _, pos in encoded],
                [self.good_id, self.bad_id],
            )
        for i, lp in zip(todo, lps):
            out[i] = [two_way(g, b) for g, b in lp]
        return out

    def scorer(self, problem: str, max_live: int, max_tokens: int) -> StepScorer:
        head = self.head(problem)
        a, pa = self.tokens(problem, ["a"])
        b, _ = self.tokens(problem, ["a", "b"])
        n_head = len(self.engine.tokenize(head, add_bos=True, special=True)) if head else 0
        if not head or b[: pa[-1] + 1] != a[: pa[-1] + 1]:
            return _RenderedScorer(self, problem)  # the template does not extend turn by turn
        with self.charged():
            bs = self.engine.branches(head, max_live=max_live, max_tokens=max_tokens * 2 + 256, scoring=True)
        return _ChatScorer(self, problem, bs, a[:n_head])


class _ChatScorer(StepScorer):
    """Incremental RLHFlow scoring on branches: the conversation with one more step extends the one
    before it, so each branch is fed only the new tokens (the previous reply, the new user turn, up to
    where the new reply begins). A branch whose rendering ever fails to extend its own (a template that
    rewrites earlier turns) is scored afresh from then on, which costs more PRM tokens but stays right."""

    def __init__(self, prm: RLHFlowPRM, problem: str, bs: BranchSet, head: list[int]):
        self.prm, self.problem, self.bs, self.head = prm, problem, bs, head
        self.steps: dict[int, list[str]] = {0: []}
        self.fed: dict[int, list[int]] = {0: []}  # tokens after the head on each branch
        self.detached: set[int] = set()

    def fork(self, branch: int, k: int = 1) -> list[int]:
        with self.prm.charged():
            kids = self.bs.fork(branch, k)
        for kid in kids:
            self.steps[kid] = list(self.steps[branch])
            self.fed[kid] = list(self.fed[branch])
            if branch in self.detached:
                self.detached.add(kid)
        return kids

    def drop(self, branches: Sequence[int]) -> None:
        self.bs.drop(branches)
        for b in branches:
            self.steps.pop(b, None)
            self.fed.pop(b, None)
            self.detached.discard(b)

    def add_steps(self, branches: Sequence[int], steps: Sequence[str]) -> list[float]:
        out: dict[int, float] = {}
        feed_b, texts, positions = [], [], []
        n = len(self.head)
        for b, s in zip(branches, steps):
            self.steps[b].append(s)
            ids, pos = self.prm.tokens(self.problem, self.steps[b])
            end = pos[-1] + 1
            fed = self.fed[b]
            if b not in self.detached and ids[:n] == self.head and ids[n : n + len(fed)] == fed and end > n + len(fed):
                feed_b.append(b)
                texts.append(ids[n + len(fed) : end])
                positions.append([end - n - len(fed) - 1])
                self.fed[b] = ids[n:end]
            else:
                self.detached.add(b)
        if feed_b:
            with self.prm.charged():
                lps = self.bs.feed(feed_b, texts, positions, [self.prm.good_id, self.prm.bad_id])
            out.update({b: two_way(lp[0][0], lp[0][1]) for b, lp in zip(feed_b, lps)})
        rest = [b for b in branches if b not in out]
        if rest:
            for b, sc in zip(rest, self.prm.score(self.problem, [self.steps[b] for b in rest])):
                out[b] = sc[-1]
        return [out[b] for b in branches]

    def close(self) -> None:
        self.bs.close()


class _RenderedScorer(TextScorer):
    """RLHFlow scoring for a chat template that does not extend turn by turn: each new step re-scores the
    branch's whole conversation."""

    def add_steps(self, branches: Sequence[int], steps: Sequence[str]) -> list[float]:
        for b, s in zip(branches, steps):
            self.steps[b].append(s)
        scores = self.prm.score(self.problem, [self.steps[b] for b in branches])
        return [s[-1] for s in scores]


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = seqs[0][i]
        if any(s[i] != t for s in seqs):
            return i
    return n
