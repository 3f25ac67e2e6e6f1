"""Process reward models: per-step scores in [0, 1] for candidate solutions of a problem.

Formats (the preset's `prm.format`):
  math-shepherd  the steps joined by a step tag; a step's score is P(good) / (P(good) + P(bad)) of the
                 token after its tag (Math-Shepherd, and the built-in tiny PRM)
  rlhflow        each step a user turn, the PRM answers good or bad (ttc.prm.rlhflow)
  self-judge     the policy judges its own steps: P(" Yes") / (P(" Yes") + P(" No")) after asking whether
                 the last step is correct, on a fork of the branch that holds the steps (ttc.prm.selfjudge)

Every solution of a problem shares the PRM's prefix (its template filled with the problem), which the
engine evaluates once. In step-wise search a `StepScorer` keeps one PRM branch per search branch, so
only each new step's tokens are ever evaluated.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import contextmanager

from ..engine.base import BranchSet, Engine, ThreadUsage, Usage
from ..errors import UsageError
from ..presets import PRMConfig
from ..prompts import fill
from .aggregate import get_aggregation


def two_way(lp_good: float, lp_bad: float) -> float:
    """P(good) / (P(good) + P(bad)) from two log-probabilities, computed stably."""
    return 1.0 / (1.0 + math.exp(min(700.0, lp_bad - lp_good)))


def single_token(engine: Engine, text: str, what: str, source: str) -> int:
    ids = engine.tokenize(text, add_bos=False, special=True)
    if len(ids) != 1:
        raise UsageError(
            f"{source}: {what} {text!r} is not a single token of {engine.info.name}'s vocabulary "
            f"(it is {len(ids)} tokens); pick a token the model has"
        )
    return ids[0]


class StepScorer(ABC):
    """Incremental scoring for step-wise search: branch ids mirror the search's branches."""

    @abstractmethod
    def fork(self, branch: int, k: int = 1) -> list[int]: ...

    @abstractmethod
    def drop(self, branches: Sequence[int]) -> None: ...

    @abstractmethod
    def add_steps(self, branches: Sequence[int], steps: Sequence[str]) -> list[float]:
        """Append one step to each branch; return each new step's score."""

    @abstractmethod
    def close(self) -> None: ...


class RewardModel(ThreadUsage, ABC):
    engine: Engine  # where its tokens are evaluated
    aggregation: str
    # usage (ThreadUsage): what scoring has cost in this thread, also when the engine is the policy's (self-judge)

    @contextmanager
    def charged(self):
        """Charge the engine work done inside to this reward model's usage."""
        before = self.engine.usage.snapshot()
        try:
            yield
        finally:
            self.usage = self.usage + (self.engine.usage - before)

    @abstractmethod
    def score(self, problem: str, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per-step scores for each solution (a list of step texts)."""

    @abstractmethod
    def scorer(self, problem: str, max_live: int, max_tokens: int) -> StepScorer: ...

    def aggregate(self, step_scores: Sequence[float]) -> float:
        return get_aggregation(self.aggregation)(step_scores)


class MathShepherdPRM(RewardModel):
    """A causal LM that predicts the good or bad token after a step tag."""

    def __init__(self, engine: Engine, cfg: PRMConfig, delimiter: str, source: str = "the preset"):
        self.engine, self.cfg, self.delimiter = engine, cfg, delimiter
        self.aggregation = cfg.aggregation
        self.usage = Usage()
        get_aggregation(cfg.aggregation)  # refuse unknown names now, not mid-run
        tag = cfg.step_tag.strip()
        if not tag:
            raise UsageError(f"{source}: prm.step_tag is empty")
        self.tag_id = single_token(engine, tag, "step tag", source)
        self.good_id = single_token(engine, cfg.good_token, "good token", source)
        self.bad_id = single_token(engine, cfg.bad_token, "bad token", source)
        self.tag_text = tag
        self.separator = delimiter if cfg.step_separator is None else cfg.step_separator

    def prefix(self, problem: str) -> str:
        return fill(self.cfg.template, problem=problem)

    def piece(self, step: str) -> tuple[list[int], int]:
        """Tokens of one step as the PRM reads it (text, tag, separator) and the tag's index in them."""
        text = step[: -len(self.delimiter)] if self.delimiter and step.endswith(self.delimiter) else step
        text = text.replace(self.tag_text, "").rstrip()  # a solution cannot plant its own tags
        ids = self.engine.tokenize(text + self.cfg.step_tag + self.separator, add_bos=False, special=False)
        at = max(i for i, t in enumerate(ids) if t == self.tag_id)
        return ids, at

    def score(self, problem: str, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        suffixes, positions = [], []
        for steps in solutions:
            ids, pos = [], []
            for step in steps:
                piece, at = self.piece(step)
                pos.append(len(ids) + at)
                ids.extend(piece)
            if pos:
                del ids[pos[-1] + 1 :]  # nothing after the last tag is read: the separator is not evaluated
            suffixes.append(ids)
            positions.append(pos)
        out = [[] for _ in solutions]
        todo = [i for i, s in enumerate(suffixes) if s]
        if todo:
            with self.charged():
                lps = self.engine.logprobs_at(
                    self.prefix(problem),
                    [suffixes[i] for i in todo],
                    [positions[i] for i in todo],
                    [self.good_id, self.bad_id],
                )
            for i, lp in zip(todo, lps):
                out[i] = [two_way(g, b) for g, b in lp]
        return out

    def scorer(self, problem: str, max_live: int, max_tokens: int) -> StepScorer:
        with self.charged():
            bs = self.engine.branches(
                self.prefix(problem), max_live=max_live, max_tokens=max_tokens * 2 + 64, scoring=True
            )
        return _ShepherdScorer(self, bs)


class TagScorer(StepScorer):
    """Step-wise scoring at step tags on PRM branches (Math-Shepherd's tokens, a head PRM's hidden states). The
    tokens after a step's tag (the separator) are evaluated only with the branch's next step: a branch that is
    pruned or ends never pays for them. The PRM reads the same tokens either way. A format says how the tag
    positions it is fed are read (`read`); the PRM gives `piece(step) -> (tokens, tag index)` and `charged()`."""

    def __init__(self, prm: RewardModel, bs: BranchSet):
        self.prm, self.bs = prm, bs
        self.pending: dict[int, list[int]] = {}  # branch -> tokens after its last tag, not yet evaluated

    def fork(self, branch: int, k: int = 1) -> list[int]:
        with self.prm.charged():
            kids = self.bs.fork(branch, k)
        for kid in kids:
            self.pending[kid] = list(self.pending.get(branch, []))
        return kids

    def drop(self, branches: Sequence[int]) -> None:
        self.bs.drop(branches)
        for b in branches:
            self.pending.pop(b, None)

    def add_steps(self, branches: Sequence[int], steps: Sequence[str]) -> list[float]:
        texts, positions = [], []
        for b, s in zip(branches, steps):
            piece, at = self.prm.piece(s)
            before = self.pending.get(b, [])
            texts.append(before + piece[: at + 1])
            positions.append([len(before) + at])
            self.pending[b] = piece[at + 1 :]
        with self.prm.charged():
            return self.read(branches, texts, positions)

    @abstractmethod
    def read(self, branches: Sequence[int], texts: list[list[int]], positions: list[list[int]]) -> list[float]:
        """Feed each branch its text and return the score at its one tag position."""

    def close(self) -> None:
        self.bs.close()


class _ShepherdScorer(TagScorer):
    """Math-Shepherd: P(good) / (P(good) + P(bad)) of the token after each tag."""

    def read(self, branches, texts, positions) -> list[float]:
        lps = self.bs.feed(branches, texts, positions, [self.prm.good_id, self.prm.bad_id])
        return [two_way(lp[0][0], lp[0][1]) for lp in lps]


class ListScorer(StepScorer):
    """Step-wise scoring that keeps one list per branch (its step texts, or its tokens), copied on fork;
    a subclass appends to `lists[b]` and scores in `add_steps`."""

    def __init__(self):
        self.lists: dict[int, list] = {0: []}
        self.next_id = 1

    def fork(self, branch: int, k: int = 1) -> list[int]:
        ids = list(range(self.next_id, self.next_id + k))
        for i in ids:
            self.lists[i] = list(self.lists[branch])
        self.next_id += k
        return ids

    def drop(self, branches: Sequence[int]) -> None:
        for b in branches:
            self.lists.pop(b, None)

    def close(self) -> None:
        self.lists.clear()


class TextScorer(ListScorer):
    """Step-wise scoring that keeps each branch's step texts only (`steps[b]`); a subclass scores them in
    `add_steps` (rlhflow's fallback for chat templates that do not extend turn by turn re-scores whole texts)."""

    def __init__(self, prm: RewardModel, problem: str):
        super().__init__()
        self.prm, self.problem = prm, problem

    @property
    def steps(self) -> dict[int, list[str]]:
        return self.lists
