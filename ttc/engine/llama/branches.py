"""Branches of one prompt inside one llama.cpp context: the bookkeeping behind `LlamaEngine`.

`LlamaBranches` keeps branches (context.Branch: sequence id, tokens, how many are cached) in one `_Context`
and turns fork / extend / feed / drop into its chunked `llama_decode` calls. Kin branches (forked, not yet
diverged) share one evaluation of their pending tokens: one cell carries all their sequence ids and they
sample from one logits row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ...errors import TTCRuntimeError
from ..base import BranchSet, Completion, SamplingParams, Watch, derive_seed
from .context import Branch, Host, _Context, _log_softmax_at
from .generation import _Gen
from .rows import RowSampler, applies, generator
from .think import ThinkState
from .tokenstats import Collector, TraceStats


class LlamaBranches(BranchSet):
    """Branches of one prompt in one llama.cpp context (see the module docstring)."""

    def __init__(
        self, engine: Host, ctx: _Context, prompt_tokens: list[int], owns_context: bool, scoring: bool = False
    ):
        self.engine, self.ctx, self.owns_context = engine, ctx, owns_context
        self.scoring = scoring  # only `feed` will follow: nothing needs to stay pending
        self.free = list(range(ctx.n_seq - 1, 0, -1))  # seq 0 is the root's
        self.live: dict[int, Branch] = {0: Branch(seq=0, tokens=list(prompt_tokens), n_prompt=len(prompt_tokens))}
        self.next_id = 1
        self.next_kin = 1

    # bookkeeping ------------------------------------------------------------------------------------------
    def _settle(self, br: Branch) -> None:
        """Evaluate a branch's tokens so that forks share that cache: all but the last when it will be
        extended (sampling needs the last token's logits), all of them in a scoring-only set."""
        upto = len(br.tokens) - (0 if self.scoring else 1)
        if br.n_cached < upto:
            self.ctx.decode([(br, upto, set())], lambda *a: None)

    def fork(self, branch: int, k: int = 1) -> list[int]:
        parent = self.live[branch]
        if k > len(self.free):
            raise TTCRuntimeError(f"no free sequence for {k} more branches ({self.ctx.n_seq} in this context)")
        with self.engine.timed():
            self._settle(parent)
        if parent.kin is None:
            parent.kin = self.next_kin
            self.next_kin += 1
        ids = []
        for _ in range(k):
            seq = self.free.pop()
            self.engine.lc.llama_memory_seq_rm(self.ctx.mem, seq, -1, -1)
            if parent.n_cached:
                self.engine.lc.llama_memory_seq_cp(self.ctx.mem, parent.seq, seq, -1, -1)
            child = Branch(
                seq=seq, tokens=list(parent.tokens), n_cached=parent.n_cached, n_prompt=parent.n_prompt,
                n_sampled_uncached=parent.n_sampled_uncached, last_sampled=parent.last_sampled,
                finished=parent.finished, kin=parent.kin,
            )  # fmt: skip
            self.live[self.next_id] = child
            ids.append(self.next_id)
            self.next_id += 1
        return ids

    def add_root(self, prompt_tokens: list[int]) -> int:
        """Another prompt's root in this context, forkable like root 0: the continuations of several prompts
        (requests that arrived together, ttc.engine.scheduler) then run in one `run`, one decode per step."""
        if not self.free:
            raise TTCRuntimeError(f"no free sequence for another prompt ({self.ctx.n_seq} in this context)")
        seq = self.free.pop()
        self.engine.lc.llama_memory_seq_rm(self.ctx.mem, seq, -1, -1)
        self.live[self.next_id] = Branch(seq=seq, tokens=list(prompt_tokens), n_prompt=len(prompt_tokens))
        self.next_id += 1
        return self.next_id - 1

    def settle(self, branches: Sequence[int]) -> None:
        """Evaluate the branches' tokens (all but the last, which sampling evaluates) in shared decodes, so
        that the roots of several prompts are read together before they are forked."""
        items = [(br, len(br.tokens) - 1, set()) for br in (self.live[b] for b in branches)]
        items = [it for it in items if it[0].n_cached < it[1]]
        if items:
            with self.engine.timed():
                self.ctx.decode(items, lambda *a: None)

    def drop(self, branches: Sequence[int]) -> None:
        for b in branches:
            br = self.live.pop(b)
            self.engine.lc.llama_memory_seq_rm(self.ctx.mem, br.seq, -1, -1)
            self.free.append(br.seq)

    def text(self, branch: int) -> str:
        br = self.live[branch]
        return self.engine.detokenize(br.tokens[br.n_prompt :])

    def tokens(self, branch: int) -> list[int]:
        return list(self.live[branch].tokens)

    def is_finished(self, branch: int) -> bool:
        return self.live[branch].finished

    def close(self) -> None:
        if self.owns_context:
            self.owns_context = False  # closing twice must not give the context back twice
            self.engine.return_context(self.ctx)

    # work -------------------------------------------------------------------------------------------------
    def extend(self, branches: Sequence[int], params: SamplingParams) -> list[Completion]:
        with self.engine.timed():
            return self.run(list(branches), params, first_index=0)

    def run(
        self, ids: list[int], params: SamplingParams, first_index: int = 0, watch: Watch | None = None,
        seeds: Sequence[int] | None = None, cancel: Callable[[int], bool] | None = None,
    ) -> list[Completion]:  # fmt: skip
        """Sample continuations of branches `ids` until each hits a stop string, EOG or max_tokens. The
        continuation of ids[j] samples with seed (params.seed, first_index + j), or with seeds[j] when given.
        With `params.stats_top_k`, each keeps TokenStats, and `watch` sees it as continuation first_index + j
        after every token: a False ends it there ("killed"; its last token stays pending, its tokens stay
        counted). `cancel(first_index + j)`, asked before every decode, True ends it there ("cancelled")."""
        eng, lc = self.engine, self.engine.lc
        stops = [s.encode("utf-8") for s in params.stop if s]
        watch = watch if params.stats_top_k > 0 else None
        stats = Collector(eng.n_vocab, params.stats_top_k, watch is not None) if params.stats_top_k > 0 else None
        state = {}
        ctl = params.thinking
        eog_first = ctl is not None and len(ctl.end) > 1 and eng.is_eog(ctl.end[0])
        # Large vocabularies sample all rows of a decode at once in numpy (rows.py); small ones use llama.cpp's
        # chain per sequence (cheap there, and the built-in pair's pinned samples come from it).
        sampler = None
        if applies(eng.n_vocab, params.top_k, params.top_p):
            sampler = RowSampler(eng.n_vocab, params.temperature, eng.eog_tokens() if params.ignore_eos else ())
        for j, b in enumerate(ids):
            br = self.live[b]
            if br.finished:
                raise TTCRuntimeError(f"branch {b} has already finished; it cannot be extended")
            seed = derive_seed(params.seed, first_index + j) if seeds is None else int(seeds[j])
            chain = None if sampler is not None else _make_chain(lc, params, seed, eng.eog_tokens(), eng.n_vocab)
            st = state[b] = _Gen(br, chain, len(br.tokens), first_index + j, generator(seed) if sampler else None)
            if stats is not None:
                st.stats = TraceStats(params.max_tokens, stats.k)
            if ctl is not None:
                st.think = ThinkState(ctl, eog_first)
        active = list(ids)
        try:
            while active:
                if cancel is not None:  # the callers that are gone (a server's client hung up)
                    for b in active:
                        if cancel(state[b].index):
                            state[b].finish("cancelled")
                    active = [b for b in active if state[b].reason is None]
                    if not active:
                        break
                # Sample inside the callback: a later chunk of the same step would overwrite the logits.
                drawn = self._draw(state, active, sampler, stats)
                still = []
                for b in active:
                    st = state[b]
                    tok = drawn[b]
                    eng.usage.generated_tokens += 1
                    st.n_generated += 1
                    if eng.is_eog(tok) and not (st.think is not None and st.think.takes_eog(tok)):
                        st.finish("eos")
                        st.br.finished = True
                    else:
                        st.br.tokens.append(tok)
                        st.br.kin = None
                        st.br.n_sampled_uncached += 1
                        st.br.last_sampled = True
                        st.push(tok, eng)
                        if st.think is not None:
                            back, forced = st.think.step(tok, len(st.ends) - 1)
                            st.force(back, forced, self.ctx, eng)
                        hit = None
                        if st.answering():
                            start = max(st.ends[-2] if len(st.ends) > 1 else 0, st.answer_byte())
                            hit = _find_stop(st.buf, stops, start)
                        if hit is not None:
                            st.cut_at_stop(hit, params.include_stop, eng)
                        elif st.n_generated + st.n_forced >= params.max_tokens:
                            st.finish("length")
                    # the watch sees every token; a natural end on this token stands (a kill saves nothing)
                    if watch is not None and not watch.step(st.index, st.stats.view()) and st.reason is None:
                        st.finish("killed")
                    if st.reason is None:
                        still.append(b)
                    elif watch is not None:
                        st.done = st.completion(eng)
                        watch.finished(st.index, st.done)
                active = still
            if stats is not None:
                stats.flush()
        finally:
            for st in state.values():
                if st.chain is not None:
                    lc.llama_sampler_free(st.chain)
        return [state[b].done or state[b].completion(eng) for b in ids]

    def _draw(
        self, state: dict[int, _Gen], active: list[int], sampler: RowSampler | None, stats: Collector | None
    ) -> dict[int, int]:
        """Decode the uncached tokens of the active branches and sample one token for each: with its llama.cpp
        chain row by row, or with `sampler` over all rows of each decode at once. With `stats`, add each
        token's statistics to its continuation, computed over all rows of each decode at once."""
        lc, ctx = self.engine.lc, self.ctx
        by_seq = {state[b].br.seq: b for b in active}
        drawn: dict[int, int] = {}
        pending: list[tuple[int, int]] = []  # (branch, batch row) of the decode just made

        def take(br: Branch, i: int, row: int) -> None:
            b = by_seq[br.seq]
            if sampler is None:
                drawn[b] = lc.llama_sampler_sample(state[b].chain, ctx.ctx, row)
            pending.append((b, row))

        def take_all() -> None:
            if not pending:
                return
            rows = sorted({r for _, r in pending})  # kin branches share a row; each draws with its own generator
            at = {r: k for k, r in enumerate(rows)}
            logits = ctx.logits_rows(rows)
            reuse = None
            if sampler is not None and sampler.temperature <= 0:
                best = sampler.greedy(logits)
                for b, r in pending:
                    drawn[b] = int(best[at[r]])
            elif sampler is not None:
                blocks, cum = sampler.weights(logits)
                for b, r in pending:
                    drawn[b] = sampler.draw(blocks, cum, at[r], state[b].rng.random())
                if sampler.temperature == 1.0 and not len(sampler.masked):
                    reuse = blocks  # exp(row - max) already: statistics need no exponential of their own
            if stats is not None:
                stats.add(logits, [(state[b].stats, at[r], drawn[b]) for b, r in pending], reuse)
            pending.clear()

        for b in active:  # a fully cached branch (after `feed`) re-evaluates its last token for logits
            br = state[b].br
            if br.n_cached == len(br.tokens):
                br.kin = None
                self.engine.lc.llama_memory_seq_rm(ctx.mem, br.seq, br.n_cached - 1, -1)
                br.n_cached -= 1
                br.last_sampled = False
        after = take_all if sampler is not None or stats is not None else pending.clear
        ctx.decode([(state[b].br, len(state[b].br.tokens), None) for b in active], take, after)
        return drawn

    def feed(self, branches, texts, positions, token_ids) -> list[np.ndarray]:
        with self.engine.timed():
            return self._feed(branches, texts, positions, token_ids)

    def _append(self, b: int, text, pos: Sequence[int]) -> tuple[Branch, list[int]]:
        """Append `text` (a string, or token ids) to branch b, uncached; return the branch and the absolute
        token indices of `pos` (indices into the appended tokens, negative from its end)."""
        br = self.live[b]
        new = list(text) if not isinstance(text, str) else self.engine.tokenize(text, add_bos=False, special=False)
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
        return br, absolute

    def _feed(self, branches, texts, positions, token_ids) -> list[np.ndarray]:
        tok_ids = np.asarray(list(token_ids), dtype=np.int64)
        results: dict[int, np.ndarray] = {}
        items, where = [], {}
        for b, text, pos in zip(branches, texts, positions):
            br, absolute = self._append(b, text, pos)
            where[br.seq] = (b, {a: k for k, a in enumerate(absolute)})
            results[b] = np.zeros((len(absolute), len(tok_ids)), dtype=np.float64)
            # Leave the last token pending unless its logits are wanted, so `extend` can follow cheaply.
            upto = len(br.tokens) if self.scoring else max([len(br.tokens) - 1, *(a + 1 for a in absolute)])
            items.append((br, upto, set(absolute)))

        def take(br: Branch, i: int, row: int) -> None:
            b, index = where[br.seq]
            results[b][index[i]] = _log_softmax_at(self.ctx.logits_row(row), tok_ids)

        self.ctx.decode(items, take)
        return [results[b] for b in branches]


def _make_chain(lc, params: SamplingParams, seed: int, eog: list[int], n_vocab: int):
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if params.ignore_eos and eog:
        bias = (lc.llama_logit_bias * len(eog))()
        for i, t in enumerate(eog):
            bias[i].token, bias[i].bias = t, float("-inf")
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(n_vocab, len(eog), bias))
    if params.temperature <= 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        return chain
    if params.top_k and params.top_k > 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(int(params.top_k)))
    if params.top_p < 1.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(float(params.top_p), 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(float(params.temperature)))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
    return chain


def _find_stop(buf: bytes, stops: list[bytes], from_byte: int) -> tuple[int, bytes] | None:
    """Earliest stop string in buf that ends after `from_byte` (the start of the newest piece)."""
    best = None
    for s in stops:
        i = buf.find(s, max(0, from_byte - len(s) + 1))
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    return best
