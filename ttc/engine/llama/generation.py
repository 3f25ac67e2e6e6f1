"""The state of one continuation while `LlamaBranches.run` samples it: its text, the byte offset where each
token ends (so a stop string cuts it exactly), its thinking block, and the tokens forced into it."""

from __future__ import annotations

import numpy as np

from ..base import Completion, ThinkTrace
from .context import Branch, Host, _Context
from .think import ThinkState
from .tokenstats import TraceStats


class _Gen:
    """The state of one continuation in `LlamaBranches.run`."""

    def __init__(self, br: Branch, chain, start: int, index: int, rng: np.random.Generator | None = None):
        self.br, self.chain, self.start = br, chain, start  # chain: llama.cpp's sampler, or None with `rng`
        self.index = index  # the continuation's index within the sample call (what a Watch is told)
        self.rng = rng  # the generator RowSampler draws this continuation's uniforms from
        self.stats: TraceStats | None = None  # its token statistics, when asked for
        self.done: Completion | None = None  # its completion, made as soon as it ended
        self.prev_last_sampled = br.last_sampled
        self.buf = b""
        self.ends: list[int] = []  # byte offset in buf where each new token ends
        self.n_generated = 0
        self.reason: str | None = None
        self.stop: str | None = None
        self.text_bytes: bytes | None = None
        self.think: ThinkState | None = None  # its thinking block, when the call has a ThinkControl

    @property
    def n_forced(self) -> int:
        """Tokens forced into it (they count towards max_tokens, not as generated): its controller's count."""
        return self.think.n_forced if self.think is not None else 0

    def push(self, tok: int, eng: Host) -> None:
        """Token `tok` (already on the branch) joins the continuation's text."""
        piece = eng.piece(tok)
        self.ends.append(len(self.buf) + len(piece))
        self.buf += piece

    def force(self, back: int, forced: tuple[int, ...], ctx: _Context, eng: Host) -> None:
        """Take the last `back` tokens back (from the branch, its KV cache and the text), then append `forced`
        as input tokens: evaluated by the next decode, never sampled."""
        br = self.br
        if back:
            keep = len(br.tokens) - back
            uncached = max(0, len(br.tokens) - max(br.n_cached, keep))  # taken-back tokens never evaluated
            if br.n_cached > keep:
                eng.lc.llama_memory_seq_rm(ctx.mem, br.seq, keep, -1)
                br.n_cached = keep
            del br.tokens[keep:]
            br.n_sampled_uncached = max(0, br.n_sampled_uncached - uncached)
            del self.ends[len(self.ends) - back :]
            self.buf = self.buf[: self.ends[-1] if self.ends else 0]
            br.last_sampled = False
        if forced:
            br.tokens.extend(forced)
            br.last_sampled = False
            for t in forced:
                self.push(t, eng)

    def answering(self) -> bool:
        """Whether stop strings apply: always without a thinking block, after its end marker with one."""
        return self.think is None or self.think.answer_from is not None

    def answer_byte(self) -> int:
        """The byte offset in `buf` where the answer begins (0 without a thinking block)."""
        at = self.think.answer_from if self.think is not None else None
        return self._byte(at) if at else 0

    def _byte(self, at: int) -> int:
        """The byte offset where token `at` of the continuation begins."""
        return self.ends[at - 1] if 0 < at <= len(self.ends) else (0 if at <= 0 else len(self.buf))

    def trace(self, data: bytes) -> ThinkTrace | None:
        """The thinking block of the finished continuation whose text is `data`."""
        t = self.think
        if t is None:
            return None
        dec = lambda b: b.decode("utf-8", errors="replace")  # noqa: E731
        think = ""
        if t.think_from is not None:
            end = self._byte(t.think_to) if t.think_to is not None else len(data)
            think = dec(data[self._byte(t.think_from) : end])
        answer = None if t.answer_from is None else dec(data[min(len(data), self._byte(t.answer_from)) :])
        return ThinkTrace(
            thinking=think, answer=answer, n_thinking=t.n_thinking, n_answer=t.n_answer, n_forced=t.n_forced,
            cut=t.cut, continuations=t.continuations, opened=t.opened,
        )  # fmt: skip

    def finish(self, reason: str) -> None:
        self.reason = reason

    def cut_at_stop(self, hit: tuple[int, bytes], include_stop: bool, eng: Host) -> None:
        """Cut the continuation exactly at the stop string; tokens past the cut leave the branch."""
        at, s = hit
        end = at + len(s) if include_stop else at
        self.reason, self.stop = "stop", s.decode("utf-8")
        self.text_bytes = self.buf[:end]
        # Keep whole tokens that end at or before `end`; re-tokenize the partial piece, if any.
        keep = 0
        while keep < len(self.ends) and self.ends[keep] <= end:
            keep += 1
        whole_end = self.ends[keep - 1] if keep else 0
        del self.br.tokens[self.start + keep :]
        self.br.n_sampled_uncached -= len(self.ends) - keep
        frag = self.buf[whole_end:end]
        if frag:
            self.br.tokens.extend(eng.tokenize(frag.decode("utf-8", errors="replace"), add_bos=False, special=False))
            self.br.last_sampled = False
        elif keep == 0:
            self.br.last_sampled = self.prev_last_sampled

    def completion(self, eng: Host) -> Completion:
        data = self.text_bytes if self.text_bytes is not None else self.buf
        toks = self.br.tokens[self.start :]
        return Completion(
            text=data.decode("utf-8", errors="replace"),
            tokens=list(toks),
            finish_reason=self.reason or "length",
            stop=self.stop,
            n_generated=self.n_generated,
            stats=None if self.stats is None else self.stats.final(),
            thinking=self.trace(data),
        )
