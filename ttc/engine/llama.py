"""The in-process llama.cpp engine: true parallel sampling over a shared prompt KV cache.

llama-cpp-python's high-level `Llama` loads the weights and tokenizer; every context ttc decodes in is its
own (`llama_init_from_model`) with a unified KV buffer and up to 256 sequences, so that:

- a prompt is evaluated once and its cells are shared by all continuations (`llama_memory_seq_cp` is
  metadata only with `kv_unified`): N samples of G tokens after a P-token prompt use about P + N*G cells;
- every live sequence advances in one `llama_decode` per step, each with its own sampler chain;
- a branch (step-wise search) is a sequence id plus its token list; forking copies KV metadata and only
  tokens never evaluated on a branch are ever decoded.

A branch keeps its last token unevaluated ("pending") until it is extended, so children of a fork each
get logits for their next token without anything being recomputed. No decode ever carries more than
`n_batch` tokens (more aborts the process): every batch is built in chunks.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..errors import TTCRuntimeError, UsageError
from .base import BranchSet, Completion, Engine, ModelInfo, SamplingParams, Usage
from .models import check_gguf, physical_cores

MAX_SEQ = 256  # llama.cpp's LLAMA_MAX_SEQ
N_BATCH = 512  # tokens per llama_decode


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:  # pragma: no cover - a core dependency
        raise TTCRuntimeError(f"llama-cpp-python is not importable ({e}); pip install llama-cpp-python") from None
    return llama_cpp


def gpu_layers(n_gpu_layers: int | None) -> int:
    """The layers to offload: as asked, or all (-1) when the build has a GPU backend, else none."""
    if n_gpu_layers is not None:
        return n_gpu_layers
    return -1 if _import_llama_cpp().llama_supports_gpu_offload() else 0


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
    """One llama_context plus its batch, sized for a piece of work."""

    def __init__(self, engine: LlamaEngine, n_ctx: int, n_seq: int):
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

    def close(self) -> None:
        if self.ctx:
            lc = self.engine.lc
            lc.llama_batch_free(self.batch)
            lc.llama_free(self.ctx)
            self.ctx = None

    def clear(self) -> None:
        self.engine.lc.llama_memory_clear(self.mem, True)

    def decode(self, items: list[tuple[Branch, int, set[int] | None]], on_logits: Callable[[Branch, int, int], None]):
        """Evaluate, for each (branch, upto, want), tokens[n_cached:upto] of the branch. `want` holds
        token indices whose logits are needed (None: the last one); `on_logits(branch, index, row)` is
        called right after the decode that produced each, while its row is readable."""
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

    def logits_row(self, row: int) -> np.ndarray:
        ptr = self.engine.lc.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))


def _log_softmax_at(logits: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max()
    lse = m + np.log(np.exp(x - m).sum())
    return x[token_ids] - lse


class LlamaEngine(Engine):
    """A GGUF model in llama.cpp. `n_gpu_layers=None` offloads every layer when the build has a GPU."""

    def __init__(self, path: str, n_gpu_layers: int | None = None, n_threads: int | None = None, verbose=False):
        lc = _import_llama_cpp()
        self.lc = lc
        n_ctx_train = check_gguf(path) or 256
        logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)
        from llama_cpp import Llama

        if n_threads is not None and n_threads < 1:
            raise UsageError(f"--threads must be at least 1, got {n_threads}")
        self.n_threads = n_threads or physical_cores()
        ngl = gpu_layers(n_gpu_layers)
        try:
            self.llm = Llama(
                model_path=str(path), n_gpu_layers=ngl, n_ctx=min(256, n_ctx_train), n_batch=256,
                n_threads=self.n_threads,
                verbose=verbose,
            )  # fmt: skip
        except Exception as e:
            raise TTCRuntimeError(f"llama.cpp could not load {path}: {e}") from None
        # Llama() resets the level from `verbose`; ttc's own messages say what matters, so keep llama.cpp
        # quiet unless asked (e.g. a unified KV larger than the training context warns, harmlessly: no
        # sequence's positions go past its prompt plus max_tokens, which check_fits keeps in range).
        logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)
        self.vocab = lc.llama_model_get_vocab(self.llm.model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        meta = dict(self.llm.metadata)
        self.info = ModelInfo(
            name=str(path).rsplit("/", 1)[-1],
            path=str(path),
            n_params=int(lc.llama_model_n_params(self.llm.model)),
            n_ctx_train=int(lc.llama_model_n_ctx_train(self.llm.model)),
            chat_template=meta.get("tokenizer.chat_template"),
            metadata=meta,
        )
        self.usage = Usage()
        self._pieces: dict[int, bytes] = {}
        self._ctx: _Context | None = None
        self._depth = 0
        self._eog: list[int] | None = None

    @contextmanager
    def timed(self):
        """Charge the wall time of the outermost engine operation to usage.wall_s."""
        self._depth += 1
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.usage.wall_s += time.perf_counter() - t0

    # -- tokens -------------------------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (self.lc.llama_token * cap)()
        n = self.lc.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos, special)
        if n < 0:  # buffer too small: -n is the size needed
            cap = -n
            buf = (self.lc.llama_token * cap)()
            n = self.lc.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos, special)
        toks = list(buf[:n])
        bos = self.lc.llama_vocab_bos(self.vocab)
        if len(toks) >= 2 and toks[0] == toks[1] == bos:  # the text carried its own BOS
            toks = toks[1:]
        return toks

    def piece(self, token: int) -> bytes:
        p = self._pieces.get(token)
        if p is None:
            buf = ctypes.create_string_buffer(64)
            n = self.lc.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self.lc.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            p = self._pieces[token] = buf.raw[:n]
        return p

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(self.lc.llama_vocab_is_eog(self.vocab, token))

    def eog_tokens(self) -> list[int]:
        if self._eog is None:
            self._eog = [t for t in range(self.n_vocab) if self.lc.llama_vocab_is_eog(self.vocab, t)]
        return self._eog

    def token_text(self, token: int) -> str:
        """A token's text with special tokens spelled out (e.g. '<s>')."""
        buf = ctypes.create_string_buffer(256)
        n = self.lc.llama_token_to_piece(self.vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    # -- contexts -----------------------------------------------------------------------------------------
    def check_fits(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt + max_tokens > self.info.n_ctx_train:
            raise UsageError(
                f"the prompt is {n_prompt} tokens and up to {max_tokens} more may be generated, but "
                f"{self.info.name} has a context of {self.info.n_ctx_train} tokens; shorten the problem "
                "or lower max_tokens"
            )

    def _shared_context(self, n_ctx: int, n_seq: int) -> _Context:
        c = self._ctx
        if c is None or c.n_ctx < n_ctx or c.n_seq < n_seq:
            if c is not None:
                c.close()
            c = self._ctx = _Context(self, n_ctx, n_seq)
        c.clear()
        return c

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- the Engine interface -----------------------------------------------------------------------------
    def sample(self, prompt: str, n: int, params: SamplingParams) -> list[Completion]:
        with self.timed():
            return self._sample(prompt, n, params)

    def _sample(self, prompt: str, n: int, params: SamplingParams) -> list[Completion]:
        if n < 1:
            raise UsageError(f"number of samples must be at least 1, got {n}")
        prompt_tokens = self.tokenize(prompt)
        self.check_fits(len(prompt_tokens), params.max_tokens)
        out: list[Completion] = []
        wave = min(n, MAX_SEQ - 1)  # sequence 0 holds the prompt
        for first in range(0, n, wave):
            k = min(wave, n - first)
            ctx = self._shared_context(len(prompt_tokens) + k * (params.max_tokens + 1) + 1, k + 1)
            bs = LlamaBranches(self, ctx, prompt_tokens, owns_context=False)
            kids = bs.fork(0, k)
            bs.drop([0])
            out.extend(bs.run(kids, params, first_index=first))
        return out

    def branches(self, prompt: str, max_live: int, max_tokens: int, scoring: bool = False) -> LlamaBranches:
        prompt_tokens = self.tokenize(prompt)
        self.check_fits(len(prompt_tokens), max_tokens)
        if max_live > MAX_SEQ - 1:
            raise UsageError(f"at most {MAX_SEQ - 1} live branches fit one llama.cpp context, asked for {max_live}")
        ctx = _Context(self, len(prompt_tokens) + max_live * (max_tokens + 1) + 1, max_live + 1)
        return LlamaBranches(self, ctx, prompt_tokens, owns_context=True, scoring=scoring)

    def logprobs_at(self, prefix, suffixes, positions, token_ids) -> list[np.ndarray]:
        with self.timed():
            return self._logprobs_at(prefix, suffixes, positions, token_ids)

    def _logprobs_at(self, prefix, suffixes, positions, token_ids) -> list[np.ndarray]:
        prefix_tokens = list(prefix) if isinstance(prefix, list) else self.tokenize(prefix)
        suffix_tokens = [s if isinstance(s, list) else self.tokenize(s, add_bos=False) for s in suffixes]
        out: list[np.ndarray] = []
        longest = max((len(s) for s in suffix_tokens), default=0)
        self.check_fits(len(prefix_tokens), longest)
        wave = MAX_SEQ - 1
        for first in range(0, len(suffix_tokens), wave):
            part = suffix_tokens[first : first + wave]
            total = sum(len(s) for s in part) + 1
            ctx = self._shared_context(len(prefix_tokens) + total + 1, len(part) + 1)
            bs = LlamaBranches(self, ctx, prefix_tokens, owns_context=False, scoring=True)
            kids = bs.fork(0, len(part))
            out.extend(bs.feed(kids, part, positions[first : first + wave], token_ids))
        return out


class LlamaBranches(BranchSet):
    """Branches of one prompt in one llama.cpp context (see the module docstring)."""

    def __init__(
        self, engine: LlamaEngine, ctx: _Context, prompt_tokens: list[int], owns_context: bool, scoring: bool = False
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
            self.ctx.close()

    # work -------------------------------------------------------------------------------------------------
    def extend(self, branches: Sequence[int], params: SamplingParams) -> list[Completion]:
        with self.engine.timed():
            return self.run(list(branches), params, first_index=0)

    def run(self, ids: list[int], params: SamplingParams, first_index: int = 0) -> list[Completion]:
        """Sample continuations of branches `ids` until each hits a stop string, EOG or max_tokens. The
        continuation of ids[j] samples with seed (params.seed, first_index + j)."""
        eng, lc = self.engine, self.engine.lc
        stops = [s.encode("utf-8") for s in params.stop if s]
        state = {}
        for j, b in enumerate(ids):
            br = self.live[b]
            if br.finished:
                raise TTCRuntimeError(f"branch {b} has already finished; it cannot be extended")
            state[b] = _Gen(
                br,
                _make_chain(lc, params, _seed(params.seed, first_index + j), eng.eog_tokens(), eng.n_vocab),
                len(br.tokens),
            )
        active = list(ids)
        try:
            while active:
                # Sample inside the callback: a later chunk of the same step would overwrite the logits.
                drawn = self._draw(state, active)
                still = []
                for b in active:
                    st = state[b]
                    tok = drawn[b]
                    eng.usage.generated_tokens += 1
                    st.n_generated += 1
                    if eng.is_eog(tok):
                        st.finish("eos")
                        st.br.finished = True
                        continue
                    st.br.tokens.append(tok)
                    st.br.kin = None
                    st.br.n_sampled_uncached += 1
                    st.br.last_sampled = True
                    st.ends.append(len(st.buf) + len(eng.piece(tok)))
                    st.buf += eng.piece(tok)
                    hit = _find_stop(st.buf, stops, st.ends[-2] if len(st.ends) > 1 else 0)
                    if hit is not None:
                        st.cut_at_stop(hit, params.include_stop, eng)
                    elif st.n_generated >= params.max_tokens:
                        st.finish("length")
                    else:
                        still.append(b)
                active = still
        finally:
            for st in state.values():
                lc.llama_sampler_free(st.chain)
        return [state[b].completion(eng) for b in ids]

    def _draw(self, state: dict[int, _Gen], active: list[int]) -> dict[int, int]:
        """Decode the uncached tokens of the active branches and sample one token for each."""
        lc, ctx = self.engine.lc, self.ctx
        by_seq = {state[b].br.seq: b for b in active}
        drawn: dict[int, int] = {}

        def take(br: Branch, i: int, row: int) -> None:
            b = by_seq[br.seq]
            drawn[b] = lc.llama_sampler_sample(state[b].chain, ctx.ctx, row)

        for b in active:  # a fully cached branch (after `feed`) re-evaluates its last token for logits
            br = state[b].br
            if br.n_cached == len(br.tokens):
                br.kin = None
                self.engine.lc.llama_memory_seq_rm(ctx.mem, br.seq, br.n_cached - 1, -1)
                br.n_cached -= 1
                br.last_sampled = False
        ctx.decode([(state[b].br, len(state[b].br.tokens), None) for b in active], take)
        return drawn

    def feed(self, branches, texts, positions, token_ids) -> list[np.ndarray]:
        with self.engine.timed():
            return self._feed(branches, texts, positions, token_ids)

    def _feed(self, branches, texts, positions, token_ids) -> list[np.ndarray]:
        eng = self.engine
        tok_ids = np.asarray(list(token_ids), dtype=np.int64)
        results: dict[int, np.ndarray] = {}
        items, where = [], {}
        for b, text, pos in zip(branches, texts, positions):
            br = self.live[b]
            new = text if isinstance(text, list) else eng.tokenize(text, add_bos=False, special=False)
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
            results[b] = np.zeros((len(absolute), len(tok_ids)), dtype=np.float64)
            # Leave the last token pending unless its logits are wanted, so `extend` can follow cheaply.
            upto = len(br.tokens) if self.scoring else max([len(br.tokens) - 1, *(a + 1 for a in absolute)])
            items.append((br, upto, set(absolute)))

        def take(br: Branch, i: int, row: int) -> None:
            b, index = where[br.seq]
            results[b][index[i]] = _log_softmax_at(self.ctx.logits_row(row), tok_ids)

        self.ctx.decode(items, take)
        return [results[b] for b in branches]


def _seed(seed: int, index: int) -> int:
    s = (int(seed) * 1_000_003 + int(index) * 7_919 + 12_345) & 0xFFFFFFFF
    return s if s != 0xFFFFFFFF else 0  # 0xFFFFFFFF means "random" to llama.cpp


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


class _Gen:
    """The state of one continuation in `LlamaBranches.run`."""

    def __init__(self, br: Branch, chain, start: int):
        self.br, self.chain, self.start = br, chain, start
        self.prev_last_sampled = br.last_sampled
        self.buf = b""
        self.ends: list[int] = []  # byte offset in buf where each new token ends
        self.n_generated = 0
        self.reason: str | None = None
        self.stop: str | None = None
        self.text_bytes: bytes | None = None

    def finish(self, reason: str) -> None:
        self.reason = reason

    def cut_at_stop(self, hit: tuple[int, bytes], include_stop: bool, eng: LlamaEngine) -> None:
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

    def completion(self, eng: LlamaEngine) -> Completion:
        data = self.text_bytes if self.text_bytes is not None else self.buf
        toks = self.br.tokens[self.start :]
        return Completion(
            text=data.decode("utf-8", errors="replace"),
            tokens=list(toks),
            finish_reason=self.reason or "length",
            stop=self.stop,
            n_generated=self.n_generated,
        )
