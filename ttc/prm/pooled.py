"""A classifier-head PRM served by vLLM: step scores from its pooling API instead of hidden states here.

vLLM serves Qwen2.5-Math-PRM (architecture Qwen2ForProcessRewardModel: backbone, Linear(h, h), ReLU,
Linear(h, 2)) as a pooling model whose STEP pooler returns, for each step tag token of the input, the softmax
over the head's two classes. ttc builds the very tokens the in-process head PRM reads (ttc.prm.heads.TagLayout:
the template filled with the problem, each step tokenized alone, the tag, the separator) with the server's own
tokenizer, sends them as token ids to `POST /pooling`, and reads the second class ("good") at each step tag.
vLLM's STEP pooler returns a row per token whose id is its step_tag_id (151651, `<extra_0>`, by default for
this architecture; or every token when it has none): ttc maps rows to its tag positions either way and says so
in one line when the rows fit neither (a server whose step_tag_id is not the preset's step tag).

Nothing is cached between requests: in step-wise search each new step sends the branch's whole text again (the
PRM tokens counted are what the server evaluated). Value-head PRMs (Skywork's Qwen2ForPrmModel) are not among
vLLM's architectures and are refused before this (ttc.solve).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..engine.base import Engine
from ..errors import TTCRuntimeError, UsageError
from ..presets import PRMConfig
from .heads import TagLayout
from .reward import ListScorer, RewardModel, StepScorer

PROBABILITY_SLACK = 1e-3  # a row is a softmax if its entries are in [0, 1] and sum to 1 within this


class PooledHeadPRM(TagLayout, RewardModel):
    """prm.format classifier-head on a vLLM server: scores from /pooling."""

    def __init__(self, engine: Engine, cfg: PRMConfig, delimiter: str, source: str = "the preset"):
        if cfg.format != "classifier-head" or getattr(engine, "kind", None) != "vllm":
            what = f"the PRM's server at {engine.info.path} is {getattr(engine, 'kind', 'not a server')}"
            raise UsageError(
                f"{source}: prm.format {cfg.format} over HTTP needs a classifier head served by vLLM's pooling API "
                f"(vllm serve Qwen/Qwen2.5-Math-PRM-7B), but {what}; or set backend.prm_base_url: in-process"
            )
        TagLayout.__init__(self, engine, cfg, delimiter, source)
        self.source = source

    def good(self, full: list[int], wanted: list[int], rows: np.ndarray) -> list[float]:
        """P(good) at the token positions `wanted` of input `full`, from the rows /pooling returned for it."""
        tags = [i for i, t in enumerate(full) if t == self.tag_id]
        if len(rows) == len(tags):
            at = {p: j for j, p in enumerate(tags)}
            picked = rows[[at[p] for p in wanted]]
        elif len(rows) == len(full):
            picked = rows[wanted]
        else:
            raise TTCRuntimeError(
                f"server at {self.engine.info.path} returned {len(rows)} pooling rows for {len(full)} tokens with "
                f"{len(tags)} step tags ({self.cfg.step_tag!r}, token {self.tag_id}); serve the PRM with STEP "
                f"pooling on that tag: --pooler-config '{{\"step_tag_id\": {self.tag_id}}}'"
            )
        if ((picked < -PROBABILITY_SLACK) | (picked > 1 + PROBABILITY_SLACK)).any() or (
            np.abs(picked.sum(axis=1) - 1.0) > PROBABILITY_SLACK
        ).any():
            raise TTCRuntimeError(
                f"server at {self.engine.info.path} returned pooling rows that are not class probabilities "
                f"(first: {picked[0].tolist()}); serve the PRM with its default softmax activation"
            )
        return [float(x) for x in picked[:, 1]]

    def score(self, problem: str, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        out: list[list[float]] = [[] for _ in solutions]
        with self.charged():
            prefix = self.engine.tokenize(self.prefix(problem))
            built = [self.tokens(steps) for steps in solutions]
            todo = [i for i, (ids, _) in enumerate(built) if ids]
            inputs = [prefix + built[i][0] for i in todo]
            rows = self.engine.pooled_rows(inputs) if inputs else []
        for i, full, r in zip(todo, inputs, rows):
            out[i] = self.good(full, [len(prefix) + p for p in built[i][1]], r)
        return out

    def scorer(self, problem: str, max_live: int, max_tokens: int) -> StepScorer:
        with self.charged():
            prefix = self.engine.tokenize(self.prefix(problem))
        return _PooledScorer(self, prefix)


class _PooledScorer(ListScorer):
    """Step-wise scoring over /pooling: each branch keeps its tokens after the prefix (separators included);
    a new step sends them up to its tag."""

    def __init__(self, prm: PooledHeadPRM, prefix: list[int]):
        super().__init__()
        self.prm, self.prefix = prm, prefix

    def add_steps(self, branches: Sequence[int], steps: Sequence[str]) -> list[float]:
        inputs = []
        with self.prm.charged():
            for b, step in zip(branches, steps):
                piece, at = self.prm.piece(step)
                inputs.append(self.prefix + self.lists[b] + piece[: at + 1])  # nothing after the tag is read
                self.lists[b] = self.lists[b] + piece
            rows = self.prm.engine.pooled_rows(inputs)
        return [self.prm.good(full, [len(full) - 1], r)[0] for full, r in zip(inputs, rows)]
