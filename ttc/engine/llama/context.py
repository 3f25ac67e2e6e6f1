"""One llama.cpp context sized for a piece of work, and the record of a branch inside it.

`_Context` owns a llama_context and its batch and turns a list of (branch, tokens to evaluate) into chunked
`llama_decode` calls, never more than `n_batch` tokens in one (more aborts the process). It needs only what
`Host` lists of the engine that lends it, so this module imports nothing from the engine that uses it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ...errors import TTCRuntimeError
from ..base import Usage


class Host(Protocol):
    """What a context and a branch set need of the engine (LlamaEngine is one)."""

    lc: Any  # the llama_cpp module (low-level API)
    llm: Any  # the llama_cpp.Llama that holds the weights
    n_threads: int
    n_vocab: int
    usage: Usage  # counters the decodes add to

    def timed(self) -> AbstractContextManager[None]: ...

    def tokenize(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def piece(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...

    def eog_tokens(self) -> list[int]: ...

    def return_context(self, c: _Context) -> None: ...


MAX_SEQ = 256  # llama.cpp's LLAMA_MAX_SEQ
N_BATCH = 512  # tokens per llama_decode


@dataclass
class Branch:
    seq: int  # llama.cpp sequence id
    tokens: list[int]  # every token of the branch, prompt included
    n_cached: int = 0  # tokens[:n_cached] are in the KV cache of `seq`
    n_prompt: int = 0  # tokens[:n_prompt] are the prompt
    n_sampled_uncached: int = 0  # how many of the uncached tokens were sampled here (not input)
    last_sampled: bool = False  # whether the last token was sampled (it stays uncached until extended)
    finished: bool = False  # ended with an end-of-generation token
    kin: int | None = None  # branches with the same kin have identical tokens and cache (forked, not diverged)

    def charge(self, upto: int) -> int:
        """Input tokens among tokens[n_cached:upto], about to be evaluated; sampled ones were counted when
        sampled. Only the last token can stay behind (`_settle`), so `last_sampled` settles the rest."""
        n = upto - self.n_cached
        left_behind_sampled = int(upto < len(self.tokens) and self.last_sampled)
        sampled = self.n_sampled_uncached - left_behind_sampled
        self.n_sampled_uncached = left_behind_sampled
        return n - sampled


class _Context:
    """One llama_context plus its batch, sized for a piece of work. `flash`: flash attention on (True),
    off (False) or llama.cpp's choice (None); see `LlamaEngine.flash_for`. `embeddings`: the context can
    return final hidden states (pooling NONE): decodes made between `set_embeddings(True)` and
    `set_embeddings(False)` give one for every token (llama.cpp outputs all tokens of such a decode, and
    computes their logits too), read with `hidden_row`. `kv_f32`: keys and values cached in f32 instead of
    llama.cpp's f16 (f16 moves a hidden state by about 1e-3)."""

    def __init__(
        self, engine: Host, n_ctx: int, n_seq: int, flash: bool | None = None, embeddings: bool = False,
        kv_f32: bool = False,
    ):  # fmt: skip
        lc = engine.lc
        self.engine = engine
        params = lc.llama_context_default_params()
        self.n_ctx = int(-(-max(n_ctx, 64) // 256) * 256)
        self.n_batch = min(N_BATCH, self.n_ctx)
        params.n_ctx = self.n_ctx
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_seq_max = max(1, min(MAX_SEQ, n_seq))
        params.kv_unified = True
        params.n_threads = engine.n_threads
        params.n_threads_batch = engine.n_threads
        params.no_perf = True
        params.flash_attn_type = (
            lc.LLAMA_FLASH_ATTN_TYPE_AUTO
            if flash is None
            else lc.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if flash
            else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        self.flash = flash
        self.embeddings = embeddings
        if embeddings:
            params.pooling_type = lc.LLAMA_POOLING_TYPE_NONE
        self.kv_f32 = kv_f32
        if kv_f32:
            params.type_k = params.type_v = lc.GGML_TYPE_F32
        self.n_seq = params.n_seq_max
        self.ctx = lc.llama_init_from_model(engine.llm.model, params)
        if not self.ctx:
            raise TTCRuntimeError(
                f"llama.cpp could not create a context of {self.n_ctx} tokens for {self.n_seq} sequences "
                "(out of memory?); lower --budget"
            )
        self.mem = lc.llama_get_memory(self.ctx)
        self.batch = lc.llama_batch_init(self.n_batch, 0, self.n_seq)
        self.n_vocab = engine.n_vocab
        self.kept: list[int] | None = None  # tokens of a prefix kept between pieces of work (hidden.py)
        self._row_types: dict[int, type] = {}  # ctypes array types of n logits rows, made once each

    def close(self) -> None:
        if self.ctx:
            lc = self.engine.lc
            lc.llama_batch_free(self.batch)
            lc.llama_free(self.ctx)
            self.ctx = None

    def clear(self) -> None:
        self.engine.lc.llama_memory_clear(self.mem, True)
        self.kept = None

    def decode(
        self,
        items: list[tuple[Branch, int, set[int] | None]],
        on_logits: Callable[[Branch, int, int], None],
        after_chunk: Callable[[], None] | None = None,
    ):
        """Evaluate, for each (branch, upto, want), tokens[n_cached:upto] of the branch. `want` holds
        token indices whose logits are needed (None: the last one); `on_logits(branch, index, row)` is
        called right after the decode that produced each, while its row is readable, and `after_chunk()`
        after those calls of each decode (rows are still readable: work on all of them at once there)."""
        lc, eng = self.engine.lc, self.engine
        # Kin branches with the same uncached tokens are evaluated once, the token carrying all their
        # sequence ids (a unified KV cell may belong to many sequences), and share the logits row.
        groups: dict[tuple, tuple[list[Branch], int, set[int]]] = {}
        for br, upto, want in items:
            want = {upto - 1} if want is None else want
            key = (br.kin, br.n_cached, upto, tuple(br.tokens[br.n_cached : upto]), frozenset(want))
            if br.kin is None:
                key = (id(br),)
            if key in groups:
                groups[key][0].append(br)
            else:
                groups[key] = ([br], upto, want)
        queue = []
        for members, upto, want in groups.values():
            first = members[0]
            eng.usage.prompt_tokens += first.charge(upto)
            for m in members[1:]:
                m.charge(upto)
            for i in range(first.n_cached, upto):
                queue.append((members, i, i in want))
        b = self.batch
        for start in range(0, len(queue), self.n_batch):
            chunk = queue[start : start + self.n_batch]
            for row, (members, i, logits) in enumerate(chunk):
                b.token[row] = members[0].tokens[i]
                b.pos[row] = i
                b.n_seq_id[row] = len(members)
                for j, m in enumerate(members):
                    b.seq_id[row][j] = m.seq
                b.logits[row] = 1 if logits else 0
            b.n_tokens = len(chunk)
            rc = lc.llama_decode(self.ctx, b)
            eng.usage.decode_calls += 1
            if rc != 0:
                raise TTCRuntimeError(
                    f"llama_decode failed (code {rc}): the KV cache of {self.n_ctx} tokens is full"
                    if rc == 1
                    else f"llama_decode failed (code {rc})"
                )
            for row, (members, i, logits) in enumerate(chunk):
                for m in members:
                    m.n_cached = i + 1
                    if logits:
                        on_logits(m, i, row)
            if after_chunk is not None:
                after_chunk()

    def logits_row(self, row: int) -> np.ndarray:
        ptr = self.engine.lc.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def set_embeddings(self, on: bool) -> None:
        """Hidden states on or off for the decodes that follow (an `embeddings` context only)."""
        self.engine.lc.llama_set_embeddings(self.ctx, bool(on))

    def hidden_row(self, row: int) -> np.ndarray:
        """The final hidden state (after the output norm) of batch row `row`, copied: [n_embd] float32."""
        lc = self.engine.lc
        ptr = lc.llama_get_embeddings_ith(self.ctx, row)
        if not ptr:
            raise TTCRuntimeError(f"llama.cpp returned no hidden state for batch row {row}")
        n = lc.llama_model_n_embd(self.engine.llm.model)
        return np.ctypeslib.as_array(ptr, shape=(n,)).copy()

    def logits_rows(self, rows: Sequence[int]) -> np.ndarray:
        """The logits of batch rows `rows` of the last decode as one (len(rows), n_vocab) float32 array: a
        view of llama.cpp's output buffer when they lie there back to back in this order, else a copy."""
        get = self.engine.lc.llama_get_logits_ith
        addr = [ctypes.cast(get(self.ctx, r), ctypes.c_void_p).value for r in rows]
        stride = self.n_vocab * ctypes.sizeof(ctypes.c_float)
        if all(b - a == stride for a, b in zip(addr, addr[1:])):
            return self._floats(addr[0], len(rows)).reshape(len(rows), self.n_vocab)
        return np.stack([self._floats(a, 1) for a in addr])

    def _floats(self, address: int, n_rows: int) -> np.ndarray:
        """n_rows logits rows at `address` as a float32 view (np.ctypeslib.as_array costs ~10 us a call, which
        a small model's decode step notices)."""
        kind = self._row_types.get(n_rows)
        if kind is None:
            kind = self._row_types[n_rows] = ctypes.c_float * (n_rows * self.n_vocab)
        return np.frombuffer(kind.from_address(address), dtype=np.float32)


def _log_softmax_at(logits: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max()
    lse = m + np.log(np.exp(x - m).sum())
    return x[token_ids] - lse
