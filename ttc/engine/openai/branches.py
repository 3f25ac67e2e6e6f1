"""Step-wise branches on an OpenAI-compatible server, held by the client.

Each branch is the prompt plus the pieces appended to it: generated text (`extend`), or text and token ids
fed by a PRM (`feed`). `fork` copies the list of pieces; nothing is recomputed on the client, and the
server's prefix cache (vLLM automatic prefix caching, SGLang's radix cache, llama-server's cache_prompt)
spares recomputing the prefixes that branches share.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np

from ...errors import TTCRuntimeError
from ..base import BranchSet, Completion, SamplingParams


class Server(Protocol):
    """What client-side branches need of the engine that talks to the server (OpenAIEngine is one)."""

    def timed(self) -> AbstractContextManager[None]: ...

    def tokenize(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def generate_many(self, prompts: list[str], params: SamplingParams, first_index: int = 0) -> list[Completion]: ...

    def scores_at(self, prompts: list[list], token_ids: Sequence[int]) -> list[np.ndarray]: ...


def position(p: int, n: int) -> int:
    q = p + n if p < 0 else p
    if not 0 <= q < n:
        raise ValueError(f"position {p} is outside a text of {n} tokens")
    return q


class OpenAIBranches(BranchSet):
    """Branches held by the client: each is the prompt plus the pieces appended to it (generated text, or
    token ids fed by a PRM); the server's prefix cache spares recomputing what branches share."""

    def __init__(self, engine: Server, prompt: str, scoring: bool = False):
        self.engine, self.scoring = engine, scoring
        self.live: dict[int, list] = {0: [prompt]}
        self.finished: set[int] = set()
        self.next_id = 1

    def fork(self, branch: int, k: int = 1) -> list[int]:
        parent = self.live[branch]
        ids = list(range(self.next_id, self.next_id + k))
        for i in ids:
            self.live[i] = list(parent)
            if branch in self.finished:
                self.finished.add(i)
        self.next_id += k
        return ids

    def drop(self, branches: Sequence[int]) -> None:
        for b in branches:
            self.live.pop(b)
            self.finished.discard(b)

    def text(self, branch: int) -> str:
        return "".join(p if isinstance(p, str) else self.engine.detokenize(p) for p in self.live[branch][1:])

    def is_finished(self, branch: int) -> bool:
        return branch in self.finished

    def close(self) -> None:
        self.live.clear()

    def extend(self, branches: Sequence[int], params: SamplingParams) -> list[Completion]:
        for b in branches:
            if b in self.finished:
                raise TTCRuntimeError(f"branch {b} has already finished; it cannot be extended")
        eng = self.engine
        with eng.timed():
            prompts = [self.live[b][0] + self.text(b) for b in branches]
            comps = eng.generate_many(prompts, params)
        for b, c in zip(branches, comps):
            if c.text:
                self.live[b].append(c.text)
            if c.finish_reason == "eos":
                self.finished.add(b)
        return comps

    def feed(self, branches, texts, positions, token_ids) -> list[np.ndarray]:
        eng = self.engine
        with eng.timed():
            jobs, where, out = [], [], []
            for j, (b, text, pos) in enumerate(zip(branches, texts, positions)):
                pieces = self.live[b]
                out.append(np.zeros((len(pos), len(token_ids)), dtype=np.float64))
                if not pos:  # nothing to score: keep the text as it is
                    new = tuple(text) if isinstance(text, list) else text
                else:
                    new = tuple(text) if isinstance(text, list) else tuple(eng.tokenize(text, False, False))
                    for k, p in enumerate(pos):
                        jobs.append([*pieces, new[: position(p, len(new)) + 1]])
                        where.append((j, k))
                if new:
                    pieces.append(new)
            for (j, k), row in zip(where, eng.scores_at(jobs, token_ids)):
                out[j][k] = row
            return out
