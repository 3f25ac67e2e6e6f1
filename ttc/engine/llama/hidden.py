"""Per-token hidden states from llama.cpp: what a reward head outside the GGUF reads.

A context created with embeddings on and pooling NONE returns, for every token whose output flag is set,
its final hidden state (for qwen2: the output of the final norm). `HiddenBranches` is a scoring-only
`LlamaBranches` in such a context whose `feed_hidden` appends tokens to many branches in one chunked decode
and returns the hidden states at the asked positions, read in the decode that evaluates them;
`hidden_at` is the one-shot form (a shared prefix evaluated once, then every suffix). The engine knows
nothing of what the states are for. A GGUF in f32 gets an f32 KV cache and no flash attention (llama.cpp's
default f16 cache moves the hidden states of a small random model by about 1e-3, and the CPU flash-attention
kernel rounds to f16 too; without both they stay within about 5e-6 of transformers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import UsageError
from .branches import LlamaBranches
from .context import MAX_SEQ, N_BATCH, Branch, _Context

STEP_TOKENS_MIN = 8  # as in engine.py: the fewest tokens a fed step is taken to have


class HiddenBranches(LlamaBranches):
    """Scoring-only branches whose fed tokens give hidden states instead of log-probabilities."""

    def __init__(self, engine, ctx: _Context, prompt_tokens: list[int], owns_context: bool):
        super().__init__(engine, ctx, prompt_tokens, owns_context=False, scoring=True)
        self.owns_hidden_context = owns_context

    def feed_hidden(
        self, branches: Sequence[int], texts: Sequence[str | list[int]], positions: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """Append texts[i] (text or token ids) to branches[i]; return, per branch, the hidden states at
        positions[i] (indices into the appended tokens, negative from its end): [len(positions[i]), n_embd]."""
        with self.engine.timed():
            return self._feed_hidden(branches, texts, positions)

    def _feed_hidden(self, branches, texts, positions) -> list[np.ndarray]:
        eng = self.engine
        n_embd = eng.lc.llama_model_n_embd(eng.llm.model)
        results: dict[int, np.ndarray] = {}
        items, where = [], {}
        for b, text, pos in zip(branches, texts, positions):
            br = self.live[b]
            new = list(text) if not isinstance(text, str) else eng.tokenize(text, add_bos=False, special=False)
            start = len(br.tokens)
            br.tokens.extend(new)
            if new:
                br.last_sampled = False
                br.kin = None
            absolute = []
            for p in pos:
                q = p + len(new) if p < 0 else p
                if not 0 <= q < len(new):
                    raise ValueError(f"position {p} is outside a text of {len(new)} tokens")
                absolute.append(start + q)
            where[br.seq] = (b, {a: k for k, a in enumerate(absolute)})
            results[b] = np.zeros((len(absolute), n_embd), dtype=np.float32)
            items.append((br, len(br.tokens), set(absolute)))

        def take(br: Branch, i: int, row: int) -> None:
            b, index = where[br.seq]
            results[b][index[i]] = self.ctx.hidden_row(row)

        self.ctx.decode(items, take)
        return [results[b] for b in branches]

    def close(self) -> None:
        if self.owns_hidden_context:
            self.owns_hidden_context = False
            give_back(self.engine, self.ctx)


def _take_spare(engine, n_ctx: int, n_seq: int, flash: bool | None) -> _Context:
    """The engine's spare hidden-state context when it fits (and is not over 4x too big), else a new one.
    An f32 GGUF gets an f32 KV cache and no flash attention (ggml's CPU kernel rounds to f16)."""
    if kv_f32(engine):
        flash = False
    spare: _Context | None = getattr(engine, "_hidden_spare", None)
    fits = spare is not None and n_ctx <= spare.n_ctx <= 4 * max(n_ctx, 256) and spare.n_seq >= n_seq
    if fits and spare.flash == flash:
        engine._hidden_spare = None
        spare.clear()
        return spare
    return _Context(engine, n_ctx, n_seq, flash, embeddings=True, kv_f32=kv_f32(engine))


def kv_f32(engine) -> bool:
    """An f32 GGUF gets an f32 KV cache: with llama.cpp's f16 cache its hidden states move by about 1e-3."""
    return engine.info.metadata.get("general.file_type") == "0"


def give_back(engine, ctx: _Context) -> None:
    """Keep one hidden-state context per engine for the next piece of work; close the one it replaces."""
    old = getattr(engine, "_hidden_spare", None)
    engine._hidden_spare = ctx
    if old is not None and old is not ctx:
        old.close()


def close_spare(engine) -> None:
    old = getattr(engine, "_hidden_spare", None)
    engine._hidden_spare = None
    if old is not None:
        old.close()


def hidden_branches(engine, prompt: str, max_live: int, max_tokens: int) -> HiddenBranches:
    """A HiddenBranches rooted at `prompt` for at most `max_live` branches of `max_tokens` new tokens."""
    prompt_tokens = engine.tokenize(prompt)
    engine.check_fits(len(prompt_tokens), max_tokens)
    if max_live > MAX_SEQ - 1:
        raise UsageError(f"at most {MAX_SEQ - 1} live branches fit one llama.cpp context, asked for {max_live}")
    flash = engine.flash_for((max_live - 1) * STEP_TOKENS_MIN)
    ctx = _take_spare(engine, len(prompt_tokens) + max_live * (max_tokens + 1) + 1, max_live + 1, flash)
    return HiddenBranches(engine, ctx, prompt_tokens, owns_context=True)


def hidden_at(engine, prefix, suffixes, positions) -> list[np.ndarray]:
    """For each prefix + suffixes[i] (texts or token lists): the hidden states at positions[i] (indices into
    the suffix's tokens, negative from its end). The prefix is evaluated once for all suffixes."""
    prefix_tokens = list(prefix) if isinstance(prefix, list) else engine.tokenize(prefix)
    suffix_tokens = [list(s) if not isinstance(s, str) else engine.tokenize(s, add_bos=False) for s in suffixes]
    engine.check_fits(len(prefix_tokens), max((len(s) for s in suffix_tokens), default=0))
    out: list[np.ndarray] = []
    wave = MAX_SEQ - 1
    for first in range(0, len(suffix_tokens), wave):
        part = suffix_tokens[first : first + wave]
        total = sum(len(s) for s in part) + 1
        flash = engine.flash_for(min(total, N_BATCH))
        ctx = _take_spare(engine, len(prefix_tokens) + total + 1, len(part) + 1, flash)
        bs = HiddenBranches(engine, ctx, prefix_tokens, owns_context=True)
        try:
            kids = bs.fork(0, len(part))
            out.extend(bs.feed_hidden(kids, part, positions[first : first + wave]))
        finally:
            bs.close()
    return out
