"""Per-token hidden states from llama.cpp: what a reward head outside the GGUF reads.

A context with pooling NONE returns, while embeddings are on, the final hidden state (for qwen2: the output
of the final norm) of every token of a decode. llama.cpp then outputs every token of that decode, logits
included (an LM head's worth of work per token), so embeddings are on only for decodes that hold nothing
but wanted tokens. `HiddenBranches` is a scoring-only `LlamaBranches` in such a context: `feed_hidden`
appends tokens to many branches and returns the hidden states at the asked positions, read in the decode
that evaluates them; per round, one decode of every branch's tokens before its next wanted one (no
outputs), then one of the wanted tokens. `hidden_at` is the one-shot form (a shared prefix evaluated once,
then every suffix). The engine knows nothing of what the states are for. A GGUF in f32 gets an f32 KV
cache and no flash attention (llama.cpp's default f16 cache moves the hidden states of a small random
model by about 1e-3, and the CPU flash-attention kernel rounds to f16 too; without both they stay within
about 5e-6 of transformers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import TTCRuntimeError, UsageError
from .branches import LlamaBranches
from .context import MAX_SEQ, N_BATCH, Branch, _Context

STEP_TOKENS_MIN = 8  # as in engine.py: the fewest tokens a fed step is taken to have


class HiddenBranches(LlamaBranches):
    """Scoring-only branches whose fed tokens give hidden states instead of log-probabilities. `keep`: the
    first `keep` prompt tokens are the context's kept prefix (see `_keep_prefix`)."""

    def __init__(self, engine, ctx: _Context, prompt_tokens: list[int], owns_context: bool, keep: int = 0):
        super().__init__(engine, ctx, prompt_tokens, owns_context=False, scoring=True)
        self.owns_hidden_context = owns_context
        if keep:
            self.free.remove(keeper(ctx))
            _keep_prefix(engine, ctx, self.live[0], keep)

    def feed_hidden(
        self,
        branches: Sequence[int],
        texts: Sequence[str | list[int]],
        positions: Sequence[Sequence[int]],
        reread: bool = False,
    ) -> list[np.ndarray]:
        """Append texts[i] (text or token ids) to branches[i]; return, per branch, the hidden states at
        positions[i] (indices into the appended tokens, negative from its end): [len(positions[i]), n_embd].
        `reread`: evaluate all the texts first with no outputs, then each wanted token once more on a
        throw-away sequence that shares the cells before it (see `_reread`)."""
        with self.engine.timed():
            return self._feed_hidden(branches, texts, positions, reread)

    def _feed_hidden(self, branches, texts, positions, reread: bool = False) -> list[np.ndarray]:
        eng = self.engine
        n_embd = eng.lc.llama_model_n_embd(eng.llm.model)
        results: dict[int, np.ndarray] = {}
        items, where = [], {}
        for b, text, pos in zip(branches, texts, positions):
            br, absolute = self._append(b, text, pos)
            where[br.seq] = (b, {a: k for k, a in enumerate(absolute)})
            results[b] = np.zeros((len(absolute), n_embd), dtype=np.float32)
            items.append((br, sorted(set(absolute))))

        def take(br: Branch, i: int, row: int) -> None:
            b, index = where[br.seq]
            results[b][index[i]] = self.ctx.hidden_row(row)

        # A decode with hidden states on outputs (and computes logits for) every token in it, so they are
        # on only for decodes of wanted tokens: round by round, each branch's tokens before its next
        # wanted one with no outputs, then the wanted tokens of all branches in one decode.
        nothing = lambda *a: None  # noqa: E731
        if reread:
            self._reread(items, where, results, nothing)
            return [results[b] for b in branches]
        while any(want for _, want in items):
            heads = [(br, want.pop(0)) for br, want in items if want]
            before = [(br, a, set()) for br, a in heads if br.n_cached < a]
            if before:
                self.ctx.decode(before, nothing)
            self.ctx.set_embeddings(True)
            try:
                self.ctx.decode([(br, a + 1, {a}) for br, a in heads], take)
            finally:
                self.ctx.set_embeddings(False)
        rest = [(br, len(br.tokens), set()) for br, _ in items if br.n_cached < len(br.tokens)]
        if rest:
            self.ctx.decode(rest, nothing)
        return [results[b] for b in branches]

    def _reread(self, items, where, results, nothing) -> None:
        """For texts with many wanted tokens. Branches go in groups of about one batch (512 tokens): each
        group's tokens are evaluated with no outputs (chunks that hold one or two branches each, the layout
        ggml's CPU flash attention runs fastest: rounds of every branch's next step took 1.4x as long,
        tests/bench_prm_heads.py), then the group's wanted tokens, each at its position on a fresh sequence
        that shares the branch's cells before it (a KV copy is metadata only), in one decode with hidden
        states on, while the cache is still short. A branch's last token, when wanted, is evaluated in
        place in that decode; every other wanted token is evaluated twice: one token more per step,
        counted in usage."""
        group, size = [], 0
        for br, want in items:
            group.append((br, want))
            size += len(br.tokens) - br.n_cached
            if size >= self.ctx.n_batch:
                self._reread_group(group, where, results, nothing)
                group, size = [], 0
        if group:
            self._reread_group(group, where, results, nothing)

    def _reread_group(self, items, where, results, nothing) -> None:
        lc, mem = self.engine.lc, self.ctx.mem
        last = [(br, len(br.tokens) - 1) for br, want in items if want and want[-1] == len(br.tokens) - 1]
        in_place = {br.seq for br, _ in last}
        first = [(br, len(br.tokens) - (br.seq in in_place), set()) for br, _ in items]
        self.ctx.decode([(br, upto, w) for br, upto, w in first if br.n_cached < upto], nothing)
        jobs = [(br, a) for br, want in items for a in want if not (br.seq in in_place and a == want[-1])]
        if jobs and not self.free:
            raise TTCRuntimeError("no free sequence to read hidden states on")
        for start in range(0, max(len(jobs), 1), len(self.free) or 1):
            wave, temps = jobs[start : start + len(self.free)], {}
            for br, a in wave:
                seq = self.free.pop()
                lc.llama_memory_seq_rm(mem, seq, -1, -1)
                lc.llama_memory_seq_cp(mem, br.seq, seq, 0, a)
                temps[seq] = (Branch(seq=seq, tokens=br.tokens[: a + 1], n_cached=a), br.seq, a)

            def take(br: Branch, i: int, row: int, temps=temps) -> None:
                b, index = where[temps[br.seq][1] if br.seq in temps else br.seq]
                results[b][index[i]] = self.ctx.hidden_row(row)

            now = [(tmp, a + 1, {a}) for tmp, _, a in temps.values()]
            if start == 0:  # the branches' own last tokens go with the first wave
                now += [(br, a + 1, {a}) for br, a in last]
            self.ctx.set_embeddings(True)
            try:
                self.ctx.decode(now, take)
            finally:
                self.ctx.set_embeddings(False)
                for seq in temps:
                    lc.llama_memory_seq_rm(mem, seq, -1, -1)
                    self.free.append(seq)

    def close(self) -> None:
        if self.owns_hidden_context:
            self.owns_hidden_context = False
            give_back(self.engine, self.ctx)


# A kept prefix. Work after work on the same problem-independent text (a PRM's system prompt and chat
# header: tens of tokens, often more than a short solution) re-read it every time. A prefix the caller names
# (`keep`) is evaluated in a decode of its own and its cells are copied to a reserved sequence, the
# keeper (the context's last), which nothing else touches; the next piece of work on the same context
# keeps those cells (all others are cleared) and its root starts from them. The first time and every later
# time the prefix's cells come from the same decode, so results do not depend on what ran before.


def keeper(ctx: _Context) -> int:
    """The sequence that holds the context's kept prefix."""
    return ctx.n_seq - 1


def _keep_prefix(engine, ctx: _Context, root: Branch, n: int) -> None:
    """Give the root its first n tokens from the kept prefix, evaluating and keeping them if not kept."""
    lc, mem, kept = engine.lc, ctx.mem, ctx.kept
    if kept == root.tokens[:n]:
        lc.llama_memory_seq_cp(mem, keeper(ctx), root.seq, 0, n)
        root.n_cached = n
        return
    ctx.decode([(root, n, set())], lambda *a: None)
    lc.llama_memory_seq_rm(mem, keeper(ctx), -1, -1)
    lc.llama_memory_seq_cp(mem, root.seq, keeper(ctx), 0, n)
    ctx.kept = list(root.tokens[:n])


def _keep_length(prompt_tokens: list[int], keep_tokens: list[int], n_seq: int) -> int:
    """How many prompt tokens to keep: all of `keep_tokens` when they begin the prompt, leave at least one
    token after them and a sequence is free for the keeper; else none."""
    n = len(keep_tokens)
    fits = 0 < n < len(prompt_tokens) and prompt_tokens[:n] == keep_tokens and n_seq < MAX_SEQ
    return n if fits else 0


def _take_spare(engine, n_ctx: int, n_seq: int, flash: bool | None, keep: list[int] | None = None) -> _Context:
    """The engine's spare hidden-state context when it fits (and is not over 4x too big), else a new one;
    cleared, but for its kept prefix when that is `keep`. An f32 GGUF gets an f32 KV cache and no flash
    attention (ggml's CPU kernel rounds to f16)."""
    if kv_f32(engine):
        flash = False
    spare: _Context | None = getattr(engine, "_hidden_spare", None)
    fits = spare is not None and n_ctx <= spare.n_ctx <= 4 * max(n_ctx, 256) and spare.n_seq >= n_seq
    if fits and spare.flash == flash:
        engine._hidden_spare = None
        if keep and spare.kept == keep:
            engine.lc.llama_memory_seq_keep(spare.mem, keeper(spare))  # every other cell goes
        else:
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


def hidden_branches(engine, prompt: str, max_live: int, max_tokens: int, keep: str = "") -> HiddenBranches:
    """A HiddenBranches rooted at `prompt` for at most `max_live` branches of `max_tokens` new tokens;
    `keep`: the prompt's leading text to keep cached for later work (see `_keep_prefix`)."""
    prompt_tokens = engine.tokenize(prompt)
    engine.check_fits(len(prompt_tokens), max_tokens)
    if max_live > MAX_SEQ - 1:
        raise UsageError(f"at most {MAX_SEQ - 1} live branches fit one llama.cpp context, asked for {max_live}")
    keep_tokens = engine.tokenize(keep) if keep else []
    n_keep = _keep_length(prompt_tokens, keep_tokens, max_live + 1)
    flash = engine.flash_for((max_live - 1) * STEP_TOKENS_MIN)
    n_ctx = len(prompt_tokens) + max_live * (max_tokens + 1) + 1
    ctx = _take_spare(engine, n_ctx, max_live + 1 + bool(n_keep), flash, keep_tokens if n_keep else None)
    return HiddenBranches(engine, ctx, prompt_tokens, owns_context=True, keep=n_keep)


def hidden_at(engine, prefix, suffixes, positions, keep: str = "") -> list[np.ndarray]:
    """For each prefix + suffixes[i] (texts or token lists): the hidden states at positions[i] (indices into
    the suffix's tokens, negative from its end). The prefix is evaluated once for all suffixes; `keep`: its
    leading text to keep cached for later work (see `_keep_prefix`)."""
    prefix_tokens = list(prefix) if isinstance(prefix, list) else engine.tokenize(prefix)
    keep_tokens = engine.tokenize(keep) if keep else []
    suffix_tokens = [list(s) if not isinstance(s, str) else engine.tokenize(s, add_bos=False) for s in suffixes]
    engine.check_fits(len(prefix_tokens), max((len(s) for s in suffix_tokens), default=0))
    out: list[np.ndarray] = []
    wave = MAX_SEQ - 1
    for first in range(0, len(suffix_tokens), wave):
        part, pos = suffix_tokens[first : first + wave], positions[first : first + wave]
        total = sum(len(s) for s in part) + 1
        # one wanted token per suffix: rounds (one decode before it, one of it); more: reread them
        reread = max((len(p) for p in pos), default=0) > 1
        spare = min(MAX_SEQ - 1 - len(part), sum(len(p) for p in pos)) if reread else 0
        flash = engine.flash_for(min(total, N_BATCH))
        n_seq = len(part) + 1 + spare
        n_keep = _keep_length(prefix_tokens, keep_tokens, n_seq)
        ctx = _take_spare(
            engine, len(prefix_tokens) + total + spare + 1, n_seq + bool(n_keep), flash, keep_tokens if n_keep else None
        )
        bs = HiddenBranches(engine, ctx, prefix_tokens, owns_context=True, keep=n_keep)
        try:
            kids = bs.fork(0, len(part))
            out.extend(bs.feed_hidden(kids, part, pos, reread=reread and spare > 0))
        finally:
            bs.close()
    return out
