"""The per-sequence thinking controller of the sampling loop: where one continuation stands relative to its
thinking block, and which tokens to force into it.

A thinking model writes its trace between a start and an end marker (token ids from `ThinkControl`), then the
answer. Each continuation of a batch has its own `ThinkState`, stepped with every token sampled for it, the
way a stop condition cuts one sequence and not the batch:

    before  the block is not open yet: the start marker's tokens open it (the prompt may have opened it)
    inside  every token counts as thinking; at `budget` thinking tokens the cut (budget message, end marker)
            is forced; an end marker before `min_tokens` is taken back and the continuation word forced in
    after   the answer: stop strings apply from here on

When the end marker's first token is an end-of-generation token (gpt-oss ends its analysis channel with
<|end|>), sampling that token inside the block starts the marker and the rest of it is forced, so the
sequence goes on to its answer. The controller only returns instructions (tokens to take back, tokens to
force); the loop in branches.py applies them to the branch and its KV cache.
"""

from __future__ import annotations

from ..base import ThinkControl

BEFORE, INSIDE, AFTER = "before", "inside", "after"


class ThinkState:
    """One continuation's thinking block. Positions are token indices within the continuation."""

    def __init__(self, ctl: ThinkControl, eog_first: bool):
        self.ctl = ctl
        self.eog_first = eog_first and len(ctl.end) > 1  # the end marker starts with an end-of-generation token
        self.state = AFTER if ctl.closed else INSIDE if ctl.opened else BEFORE
        self.opened = ctl.opened
        self.n_thinking = 0
        self.n_answer = 0
        self.n_forced = 0
        self.cut = False
        self.continuations = 0
        self.tail: list[int] = []  # sampled ids since the last marker, for matching multi-token markers
        self.think_from = 0 if ctl.opened else None  # where the thinking text begins
        self.think_to: int | None = None  # where it ends (the end marker or the forced cut begins)
        self.answer_from: int | None = 0 if ctl.closed else None  # where the answer begins

    def takes_eog(self, token: int) -> bool:
        """Whether an end-of-generation token sampled now is the start of the end marker, not the end."""
        return self.eog_first and self.state == INSIDE and token == self.ctl.end[0]

    def step(self, token: int, at: int) -> tuple[int, tuple[int, ...]]:
        """Token `token` was sampled and appended at position `at`. Returns (how many tokens to take back from
        the end of the continuation, tokens to force after them)."""
        ctl = self.ctl
        if self.state == AFTER:
            self.n_answer += 1
            return 0, ()
        self.tail.append(token)
        if self.state == BEFORE:
            if ctl.start and _ends_with(self.tail, ctl.start):
                self.state, self.opened, self.think_from = INSIDE, True, at + 1
                self.tail.clear()
            return 0, ()
        # inside the block
        if self.eog_first and token == ctl.end[0]:
            return self._end(at, matched=1, rest=ctl.end[1:])
        if _ends_with(self.tail, ctl.end):
            return self._end(at, matched=len(ctl.end), rest=())
        self.n_thinking += 1
        if ctl.budget is not None and self.n_thinking >= ctl.budget:
            self.state, self.cut, self.think_to = AFTER, True, at + 1
            self.n_forced += len(ctl.cut)
            self.answer_from = at + 1 + len(ctl.cut)
            return 0, tuple(ctl.cut)
        return 0, ()

    def _end(self, at: int, matched: int, rest: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        """The end marker was sampled (its last `matched` tokens end at `at`; `rest` is still to force)."""
        ctl = self.ctl
        self.n_thinking -= matched - 1  # a multi-token marker's first tokens were counted as thinking
        self.tail.clear()
        first = at - matched + 1
        if self.n_thinking < ctl.min_tokens and ctl.resume:
            if ctl.budget is None or self.n_thinking + len(ctl.resume) < ctl.budget:
                self.continuations += 1
                self.n_thinking += len(ctl.resume)
                self.n_forced += len(ctl.resume)
                return matched, tuple(ctl.resume)
            # the continuation word would run past the budget: the budget's cut replaces the early end
            self.state, self.cut, self.think_to = AFTER, True, first
            self.n_forced += len(ctl.cut)
            self.answer_from = first + len(ctl.cut)
            return matched, tuple(ctl.cut)
        self.state, self.think_to = AFTER, first
        self.n_forced += len(rest)
        self.answer_from = at + 1 + len(rest)
        return 0, tuple(rest)


def _ends_with(seq: list[int], marker: tuple[int, ...]) -> bool:
    return len(seq) >= len(marker) and tuple(seq[-len(marker) :]) == marker
