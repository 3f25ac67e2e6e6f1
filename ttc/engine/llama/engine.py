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
import os
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np

from ...errors import TTCRuntimeError, UsageError
from ..base import Completion, Engine, ModelInfo, SamplingParams, Usage, Watch
from ..models import check_gguf, physical_cores
from . import llama_log
from .branches import LlamaBranches
from .buffers import plain_cpu_buffers
from .context import MAX_SEQ, N_BATCH, _Context
from .stack import LONG_TEXT, on_deep_stack

SPARE_CONTEXTS = 4  # closed branch sets' contexts kept per engine for reuse
FLASH_MIN_TOKENS = 64  # on the CPU, flash attention pays for decodes of at least this many tokens
STEP_TOKENS_MIN = 8  # the fewest tokens a scored step is taken to have (a line like "37+48=85")
FLASH_MODES = ("auto", "on", "off")
TOKEN_TYPE_NORMAL = 1  # GGUF's token type of ordinary text
# the token texts llama.cpp (llama-vocab.cpp, load) counts as end of generation whatever the GGUF says
EOG_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
)  # fmt: skip

__all__ = ["MAX_SEQ", "LlamaBranches", "LlamaEngine", "_Context", "gpu_layers"]


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


class LlamaEngine(Engine):
    """A GGUF model in llama.cpp. `n_gpu_layers=None` offloads every layer when the build has a GPU."""

    def __init__(
        self,
        path: str,
        n_gpu_layers: int | None = None,
        n_threads: int | None = None,
        verbose=False,
        flash_attn: str | None = None,
    ):
        lc = _import_llama_cpp()
        self.lc = lc
        self.flash_attn = (flash_attn or os.environ.get("TTC_FLASH_ATTN") or "auto").strip().lower()
        if self.flash_attn not in FLASH_MODES:
            raise UsageError(f"flash attention must be one of {', '.join(FLASH_MODES)}, got '{self.flash_attn}'")
        self.facts = check_gguf(path)
        n_ctx_train = self.facts.context_length or 256
        if n_threads is not None and n_threads < 1:
            raise UsageError(f"--threads must be at least 1, got {n_threads}")
        self.n_threads = n_threads or physical_cores()
        ngl = gpu_layers(n_gpu_layers)
        self.offloaded = ngl != 0 and bool(lc.llama_supports_gpu_offload())
        self.verbose = bool(verbose)
        llama_log.install(lc, self.verbose)
        from llama_cpp import Llama

        llama_log.errors.clear()
        try:
            with plain_cpu_buffers(lc):
                self.llm = Llama(
                    model_path=str(path), n_gpu_layers=ngl, n_ctx=min(256, n_ctx_train), n_batch=256,
                    n_threads=self.n_threads,
                    verbose=verbose,
                )  # fmt: skip
        except Exception as e:
            raise TTCRuntimeError(llama_log.load_failure(path, e)) from None
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
        # contexts of closed branch sets, reused by the next ones: creating a context costs milliseconds,
        # which a search solving a small problem would otherwise pay twice (policy and PRM) per problem
        self._spare: list[_Context] = []
        self._spare_lock = threading.Lock()
        self._depth = 0
        self._eog: list[int] | None = None
        self._kv_cell: int | None = None

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
        if len(text) > LONG_TEXT:  # llama.cpp's pre-tokenizer recurses deep on a long unbroken run of characters
            return on_deep_stack(lambda: self._tokenize(text, add_bos, special))
        return self._tokenize(text, add_bos, special)

    def _tokenize(self, text: str, add_bos: bool, special: bool) -> list[int]:
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
        """The end-of-generation tokens (llama.cpp's list), found once. Asking llama.cpp about every token
        costs ~0.2 s on a 262k vocabulary, so only the tokens that can be in its list are asked about: those
        the GGUF does not type as normal text, the ids the metadata names, and the texts llama.cpp matches."""
        if self._eog is None:
            self._eog = sorted(t for t in self._eog_candidates() if self.lc.llama_vocab_is_eog(self.vocab, t))
        return self._eog

    def _eog_candidates(self) -> range | set[int]:
        types = self.facts.arrays.get("tokenizer.ggml.token_type")
        if types is None or types.type not in (4, 5) or types.count != self.n_vocab:  # not one int32 per token
            return range(self.n_vocab)
        kinds = np.fromfile(self.facts.path, dtype="<i4", count=types.count, offset=types.offset)
        found = set(np.flatnonzero(kinds != TOKEN_TYPE_NORMAL).tolist())
        lc, v = self.lc, self.vocab
        found.update(f(v) for f in (lc.llama_vocab_eos, lc.llama_vocab_eot, lc.llama_vocab_fim_pad,
                                    lc.llama_vocab_fim_rep, lc.llama_vocab_fim_sep))  # fmt: skip
        found.update(
            v for k, v in self.facts.metadata.items()
            if k.startswith("tokenizer.ggml.") and k.endswith("_token_id") and isinstance(v, int)
        )  # fmt: skip
        for text in EOG_TEXTS:  # llama.cpp makes a token with one of these texts a control token
            toks = self.tokenize(text, add_bos=False, special=True)
            if len(toks) == 1:
                found.add(toks[0])
        return {t for t in found if 0 <= t < self.n_vocab}

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

    def flash_for(self, tokens_per_decode: int, one_stream: bool = False) -> bool | None:
        """Flash attention for a context whose decodes carry about `tokens_per_decode` tokens (`one_stream`:
        one token of a single sequence each): as asked (`flash_attn` on / off, or TTC_FLASH_ATTN), else
        llama.cpp's choice where layers run on a GPU, else on from FLASH_MIN_TOKENS up and for one stream.
        On the CPU, ggml's flash-attention kernel is slow for decodes of a few to 63 tokens (1.4x-2.1x the
        time without it, more with a longer cache) and pays from about 64 up; one stream samples faster
        with it, a few parallel ones mostly slower (`python -m ttc.flashbench`; figures in the README)."""
        if self.flash_attn != "auto":
            return self.flash_attn == "on"
        if self.offloaded:
            return None
        return one_stream or tokens_per_decode >= FLASH_MIN_TOKENS

    def kv_bytes_per_cell(self) -> int:
        """Bytes of KV cache one token position takes (f16 K and V in every layer): what a context of n cells
        costs, read from the model's shape (head size from the GGUF where it says, as Gemma's differs from
        embedding / heads)."""
        if self._kv_cell is None:
            lc, m = self.lc, self.llm.model
            n_layer, n_head, n_kv = lc.llama_model_n_layer(m), lc.llama_model_n_head(m), lc.llama_model_n_head_kv(m)
            arch = self.info.metadata.get("general.architecture", "")
            k = int(self.info.metadata.get(f"{arch}.attention.key_length", 0) or 0) or lc.llama_model_n_embd(m) // max(
                1, n_head
            )
            v = int(self.info.metadata.get(f"{arch}.attention.value_length", 0) or 0) or k
            self._kv_cell = int(n_layer * n_kv * (k + v) * 2)
        return self._kv_cell

    @staticmethod
    def kv_limit_bytes() -> int:
        """The KV memory one sampling wave may size its context for: TTC_KV_MEMORY_MB, else a quarter of the
        machine's memory. Samples past it run in further waves instead of one context sized for them all."""
        raw = os.environ.get("TTC_KV_MEMORY_MB", "").strip()
        if raw:
            if not raw.isdigit() or int(raw) < 1:
                raise UsageError(f"TTC_KV_MEMORY_MB must be a positive integer (megabytes), got {raw!r}")
            return int(raw) << 20
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
        except (ValueError, OSError, AttributeError):  # not POSIX
            return 4 << 30

    def _shared_context(self, n_ctx: int, n_seq: int, flash: bool | None) -> _Context:
        """The engine's one context for one-shot work (sampling, scoring), replaced when it is too small or
        has the other flash setting: one at a time, as a 64-sample context of a large model can be most
        of the memory."""
        c = self._ctx
        if c is None or c.n_ctx < n_ctx or c.n_seq < n_seq or c.flash != flash:
            if c is not None:
                c.close()
            llama_log.install(self.lc, self.verbose)  # context creation logs (e.g. the SWA cache line)
            c = self._ctx = _Context(self, n_ctx, n_seq, flash)
        c.clear()
        return c

    def lease_context(self, n_ctx: int, n_seq: int, flash: bool | None = None) -> _Context:
        """A cleared context with room for n_ctx tokens and n_seq sequences: a spare one that fits (and is
        not more than 4x too big) with the same flash setting, else a new one. Give it back with
        `return_context`."""
        with self._spare_lock:
            found = next(
                (
                    i
                    for i, c in enumerate(self._spare)
                    if n_ctx <= c.n_ctx <= 4 * max(n_ctx, 256) and c.n_seq >= min(MAX_SEQ, n_seq) and c.flash == flash
                ),
                None,
            )
            c = self._spare.pop(found) if found is not None else None
        if c is None:
            llama_log.install(self.lc, self.verbose)
            return _Context(self, n_ctx, n_seq, flash)
        c.clear()
        return c

    def return_context(self, c: _Context) -> None:
        with self._spare_lock:
            self._spare.append(c)
            extra = self._spare[:-SPARE_CONTEXTS]
            del self._spare[:-SPARE_CONTEXTS]
        for e in extra:
            e.close()

    def hidden_at(self, prefix, suffixes, positions, keep: str = "") -> list[np.ndarray]:
        from .hidden import hidden_at

        with self.timed():
            return hidden_at(self, prefix, suffixes, positions, keep)

    def hidden_branches(self, prompt: str, max_live: int, max_tokens: int, keep: str = ""):
        from .hidden import hidden_branches

        with self.timed():
            return hidden_branches(self, prompt, max_live, max_tokens, keep)

    def close(self) -> None:
        from .hidden import close_spare

        close_spare(self)
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        with self._spare_lock:
            spare, self._spare = self._spare, []
        for c in spare:
            c.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- the Engine interface -----------------------------------------------------------------------------
    def sample(self, prompt: str, n: int, params: SamplingParams, watch: Watch | None = None) -> list[Completion]:
        with self.timed():
            return self._sample(prompt, n, params, watch)

    def _sample(self, prompt: str, n: int, params: SamplingParams, watch: Watch | None = None) -> list[Completion]:
        if n < 1:
            raise UsageError(f"number of samples must be at least 1, got {n}")
        prompt_tokens = self.tokenize(prompt)
        self.check_fits(len(prompt_tokens), params.max_tokens)
        out: list[Completion] = []
        # sequence 0 holds the prompt; a wave's context is sized for every sequence running to max_tokens,
        # so a wave is also bounded by the KV memory that worst case would take (kv_limit_bytes)
        room = self.kv_limit_bytes() // max(1, self.kv_bytes_per_cell()) - len(prompt_tokens) - 1
        wave = max(1, min(n, MAX_SEQ - 1, room // (params.max_tokens + 1)))
        for first in range(0, n, wave):
            k = min(wave, n - first)
            # each decode carries one token per unfinished sequence: k at first, fewer as they finish
            ctx = self._shared_context(
                len(prompt_tokens) + k * (params.max_tokens + 1) + 1, k + 1, self.flash_for(k // 2, k == 1)
            )
            bs = LlamaBranches(self, ctx, prompt_tokens, owns_context=False)
            kids = bs.fork(0, k)
            bs.drop([0])
            out.extend(bs.run(kids, params, first_index=first, watch=watch))
        return out

    def branches(
        self, prompt: str, max_live: int, max_tokens: int, scoring: bool = False, feed_tokens: int = 0
    ) -> LlamaBranches:
        prompt_tokens = self.tokenize(prompt)
        self.check_fits(len(prompt_tokens), max_tokens)
        if max_live > MAX_SEQ - 1:
            raise UsageError(f"at most {MAX_SEQ - 1} live branches fit one llama.cpp context, asked for {max_live}")
        # a search feeds every live branch's step (scoring) or one token per live branch (generation);
        # a caller that feeds long texts first (revisions: the earlier attempts) says how many tokens
        per_decode = max((max_live - 1) * STEP_TOKENS_MIN if scoring else max_live // 2, min(feed_tokens, N_BATCH))
        ctx = self.lease_context(
            len(prompt_tokens) + max_live * (max_tokens + 1) + 1, max_live + 1, self.flash_for(per_decode)
        )
        try:
            return LlamaBranches(self, ctx, prompt_tokens, owns_context=True, scoring=scoring)
        except BaseException:
            ctx.close()
            raise

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
            ctx = self._shared_context(
                len(prefix_tokens) + total + 1, len(part) + 1, self.flash_for(min(total, N_BATCH))
            )
            bs = LlamaBranches(self, ctx, prefix_tokens, owns_context=False, scoring=True)
            kids = bs.fork(0, len(part))
            out.extend(bs.feed(kids, part, positions[first : first + wave], token_ids))
        return out
