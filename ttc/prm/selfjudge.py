"""Self-judging: the policy scores its own steps, P(" Yes") / (P(" Yes") + P(" No")) after a question about
the last step. Weaker than a trained PRM, but it keeps every strategy usable on a preset that names only a
model.

Linear cost. The judge reads, for step k of a solution,

    prompt | s1 | w1 + s2 | ... | w(k-1) + sk | QUESTION

where si is step i without its trailing whitespace and wi that whitespace (it is held back and fed with
the next step, so the question always follows the step's last visible character, as it did when the whole
text was judged at once: the text read is exactly `prompt + "".join(steps[:k]).rstrip() + QUESTION`). A
branch holds the prompt and the pieces so far; a step is scored by forking that branch, feeding only the
question, reading the answer token's probabilities at its end and dropping the fork. So every solution
token is evaluated once, the prompt once per problem, and the question once per step scored:

    PRM tokens = prompt + tokens of the steps read + question tokens x steps scored

Each piece is tokenized on its own (`special=False`: a solution cannot plant chat markup), so token
boundaries fall between a step's last non-space character and the whitespace after it, and before the
question. On a byte-level vocabulary that is exactly the tokenization of the whole text; on a BPE
vocabulary it is the same except where a merge would cross one of those boundaries (rare: see the tests
and the README's figures).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..engine.base import BranchSet, Engine, Usage
from ..errors import TTCRuntimeError
from .aggregate import get_aggregation
from .reward import RewardModel, StepScorer, two_way

MAX_BRANCHES = 255  # live branches one llama.cpp branch set can hold (its 256 sequences less the root's)
SCORE_CELLS = 1 << 16  # KV cells `score` asks for at most (it scores big sets of candidates in groups)


class SelfJudgePRM(RewardModel):
    """The policy scores its own steps by P(" Yes") to a question about the last step."""

    QUESTION = "\n\nIs the last step above correct? Answer Yes or No.\nAnswer:"

    def __init__(
        self,
        engine: Engine,
        prompt_for: Callable[[str], str],
        aggregation: str = "last",
        question: str | None = None,
    ):
        self.engine, self.prompt_for, self.aggregation = engine, prompt_for, aggregation
        self.question = self.QUESTION if question is None else question
        self.usage = Usage()
        get_aggregation(aggregation)
        self.yes_id = self._answer_token(" Yes", "Yes")
        self.no_id = self._answer_token(" No", "No")
        self.question_ids = engine.tokenize(self.question, add_bos=False, special=False)
        if not self.question_ids:
            raise TTCRuntimeError("the self-judge question is empty")

    def _answer_token(self, *spellings: str) -> int:
        for s in spellings:
            ids = self.engine.tokenize(s, add_bos=False, special=False)
            if len(ids) == 1:
                return ids[0]
        return self.engine.tokenize(spellings[-1], add_bos=False, special=False)[0]

    def piece(self, held: str, step: str) -> tuple[list[int], str]:
        """The tokens a step adds to its branch, and the whitespace held back after it. `held` is the
        whitespace held back after the step before; a blank step adds nothing and holds its text back."""
        body = step.rstrip()
        if not body:
            return [], held + step
        return self.engine.tokenize(held + body, add_bos=False, special=False), step[len(body) :]

    def pieces(self, steps: Sequence[str]) -> list[list[int]]:
        """Every step's piece, in order (see `piece`)."""
        out, held = [], ""
        for s in steps:
            ids, held = self.piece(held, s)
            out.append(ids)
        return out

    def judge(self, bs: BranchSet, branches: Sequence[int], pieces: Sequence[list[int]], room: int) -> list[float]:
        """Append each piece to its branch, then score it: fork the branch, feed the question, read P(" Yes")
        against P(" No") at its end, drop the fork. At most `room` forks are live at once."""
        fed = [(b, p) for b, p in zip(branches, pieces) if p]
        if fed:
            bs.feed([b for b, _ in fed], [list(p) for _, p in fed], [[] for _ in fed], [])
        out: list[float] = []
        for start in range(0, len(branches), room):
            part = list(branches[start : start + room])
            forks = [bs.fork(b, 1)[0] for b in part]
            try:
                lps = bs.feed(
                    forks, [list(self.question_ids) for _ in forks], [[-1]] * len(forks), [self.yes_id, self.no_id]
                )
            finally:
                bs.drop(forks)
            out += [two_way(lp[0][0], lp[0][1]) for lp in lps]
        return out

    def score(self, problem: str, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per-step scores of whole solutions. All of them hang off one root holding the prompt (evaluated
        once); each solution is a branch that takes its steps one by one, judged on forks."""
        out: list[list[float]] = [[] for _ in solutions]
        todo = [i for i, s in enumerate(solutions) if s]
        if not todo:
            return out
        pieces = {i: self.pieces(solutions[i]) for i in todo}
        longest = max(sum(len(p) for p in pieces[i]) for i in todo) + len(self.question_ids)
        # a branch and its fork per solution; groups small enough that the context stays within SCORE_CELLS
        group = max(1, min(len(todo), MAX_BRANCHES // 2, SCORE_CELLS // (2 * (longest + 1))))
        with self.charged():
            with self.engine.branches(
                self.prompt_for(problem), max_live=2 * group, max_tokens=longest, scoring=True
            ) as bs:
                for first in range(0, len(todo), group):
                    part = todo[first : first + group]
                    ids = dict(zip(part, bs.fork(0, len(part))))
                    for k in range(max(len(pieces[i]) for i in part)):
                        now = [i for i in part if k < len(pieces[i])]
                        scores = self.judge(bs, [ids[i] for i in now], [pieces[i][k] for i in now], len(now))
                        for i, s in zip(now, scores):
                            out[i].append(s)
                    bs.drop(list(ids.values()))
        return out

    def scorer(self, problem: str, max_live: int, max_tokens: int) -> StepScorer:
        cap = min(MAX_BRANCHES, 2 * max_live)  # each search branch and its fork for the question
        with self.charged():
            bs = self.engine.branches(
                self.prompt_for(problem), max_live=cap, max_tokens=max_tokens + len(self.question_ids), scoring=True
            )
        return _SelfJudgeScorer(self, bs, cap)


class _SelfJudgeScorer(StepScorer):
    """Self-judging in step-wise search: one branch per search branch, holding the prompt and its steps;
    `add_steps` feeds only each new step and asks the question on a fork."""

    def __init__(self, prm: SelfJudgePRM, bs: BranchSet, cap: int):
        self.prm, self.bs, self.cap = prm, bs, cap
        self.held: dict[int, str] = {0: ""}  # live branch -> whitespace after its last step, not yet fed

    def fork(self, branch: int, k: int = 1) -> list[int]:
        with self.prm.charged():
            kids = self.bs.fork(branch, k)
        for kid in kids:
            self.held[kid] = self.held[branch]
        return kids

    def drop(self, branches: Sequence[int]) -> None:
        self.bs.drop(branches)
        for b in branches:
            self.held.pop(b, None)

    def add_steps(self, branches: Sequence[int], steps: Sequence[str]) -> list[float]:
        pieces = []
        for b, s in zip(branches, steps):
            ids, self.held[b] = self.prm.piece(self.held[b], s)
            pieces.append(ids)
        room = self.cap - sum(1 for b in self.held if b != 0)
        if room < 1:
            raise TTCRuntimeError(f"self-judging needs a free branch for its question; {self.cap} are all in use")
        with self.prm.charged():
            return self.prm.judge(self.bs, branches, pieces, room)

    def close(self) -> None:
        self.bs.close()
        self.held.clear()
