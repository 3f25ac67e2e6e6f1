"""The backend interface that strategies use: samples, step-wise branches, log-probabilities, counts.

An engine turns text (or token sequences) into continuations, scores and counts. It knows nothing of
strategies, math or prompts. Two implementations: `ttc.engine.llama` (in-process llama.cpp, batched, with
a shared-prefix KV cache) and, later, an OpenAI-compatible HTTP backend.

Every engine keeps a running `Usage`; callers take `engine.usage.snapshot()` before a piece of work and
subtract it afterwards to learn what that work cost.
"""

from __future__ import annotations

import dataclasses
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError


@dataclass(frozen=True)
class ThinkControl:
    """A thinking model's block, as token ids the engine watches and forces, per sequence (ttc.thinking makes
    it from markers; the engine knows nothing of why). Every continuation keeps its own count of thinking
    tokens: the tokens after the start marker, forced continuations included, the end marker not."""

    end: tuple[int, ...]  # the end marker's tokens (Qwen3: "</think>"; gpt-oss: "<|end|><|start|>...final...")
    start: tuple[int, ...] = ()  # the start marker's tokens; the block opens where the model writes them
    opened: bool = False  # the prompt already opened the block (R1 distills): counting starts at once
    closed: bool = False  # the prompt already holds a closed block (thinking switched off): all is answer
    budget: int | None = None  # thinking tokens per continuation; at the budget `cut` is forced
    cut: tuple[int, ...] = ()  # forced at the budget: the budget message's tokens and the end marker
    min_tokens: int = 0  # an end marker before this many thinking tokens is replaced by `resume`
    resume: tuple[int, ...] = ()  # the continuation word's tokens ("Wait")
    # the same as text, for backends that continue text rather than tokens (an HTTP server)
    start_text: str = ""
    end_text: str = ""
    cut_text: str = ""
    resume_text: str = ""


@dataclass
class ThinkTrace:
    """Where one continuation's thinking block lay and what was forced into it (Completion.thinking)."""

    thinking: str  # the text inside the block (markers excluded; forced continuation words included)
    answer: str | None  # the text after the end marker; None when the block never closed (no answer)
    n_thinking: int = 0  # thinking tokens (forced continuation words included)
    n_answer: int = 0  # tokens sampled after the end marker
    n_forced: int = 0  # tokens ttc forced (the budget message and end marker, continuation words)
    cut: bool = False  # the budget ended the block
    continuations: int = 0  # early end markers replaced by the continuation word
    opened: bool = False  # the block was opened (by the prompt or the model)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8  # 0 = greedy (argmax)
    top_p: float = 1.0  # nucleus sampling; 1 = off
    top_k: int = 0  # 0 = off
    max_tokens: int = 512  # new tokens per continuation
    stop: tuple[str, ...] = ()  # stop strings; the earliest occurrence ends the continuation
    include_stop: bool = False  # keep the stop string at the end of the text (step-wise search does)
    seed: int = 0  # continuation i of a call samples with a generator seeded from (seed, i)
    ignore_eos: bool = False  # never end on an end-of-generation token (benchmarks with fixed lengths)
    stats_top_k: int = 0  # > 0: keep TokenStats on each completion, confidence over this many top tokens (DeepConf: 20)
    # a thinking model's block: per-sequence budget and forcing; stops then apply to the answer only, and
    # max_tokens bounds the forced tokens too (every token a continuation adds)
    thinking: ThinkControl | None = None


@dataclass
class TokenStats:
    """What the logits row of each generated token said, computed from the row the token was drawn from
    (raw logits: before temperature, top-k/top-p and masks), one float32 entry per generated token (tokens
    sampled past a stop string included). Costs no extra decode."""

    confidence: np.ndarray  # DeepConf's token confidence: -(1/k) * sum of the top-k log-probabilities
    logprob: np.ndarray  # log P(the sampled token)
    certainty: np.ndarray  # self-certainty: KL(uniform || p) over the full vocabulary; NaN where only top-k is seen
    top_k: int = 20  # the k of `confidence`
    approximate: bool = False  # computed from a server's top-k log-probabilities, not the full logits row


@dataclass
class Completion:
    """One continuation."""

    text: str  # the new text (cut exactly at a stop string)
    tokens: list[int]  # token ids that make up `text` (after a cut inside a token: the re-tokenized cut)
    finish_reason: str  # "stop" (a stop string), "eos" (end of generation token) or "length" (max_tokens)
    stop: str | None = None  # the stop string that ended it
    n_generated: int = 0  # tokens sampled for it, including any past a stop string
    stats: TokenStats | None = None  # per-token statistics, when SamplingParams.stats_top_k > 0
    thinking: ThinkTrace | None = None  # the thinking block, when SamplingParams.thinking was given


class Watch:
    """Sees the continuations of one `Engine.sample` call while they are generated and may stop any of them.
    The engine knows nothing of why: it only asks "continue or stop this sequence" after each token.
    Only called when `SamplingParams.stats_top_k > 0`."""

    def step(self, index: int, stats: TokenStats) -> bool:
        """After each token sampled for continuation `index` (0..n-1 within the call), with its statistics so
        far (arrays of the tokens generated until now; views valid during the call only). False stops it
        there: its completion ends with finish_reason "killed" and keeps the tokens it generated."""
        return True

    def finished(self, index: int, completion: Completion) -> None:  # noqa: B027 - optional hook
        """Continuation `index` ended (for any reason, "killed" included); called as soon as it does."""


@dataclass
class Usage:
    """What was spent. Additive; `wall_s` is the engine's own time."""

    prompt_tokens: int = 0  # tokens evaluated that the engine did not sample itself
    generated_tokens: int = 0  # tokens sampled
    decode_calls: int = 0  # llama_decode calls (or HTTP requests for a remote backend)
    wall_s: float = 0.0

    def snapshot(self) -> Usage:
        return dataclasses.replace(self)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


_LOCAL_LOCK = threading.Lock()


class ThreadUsage:
    """A `usage` kept per thread, for what serves several threads at once (an HTTP engine, the request
    scheduler, a reward model): each thread sees what its own work cost, so problems solved concurrently each
    measure their own spend."""

    _local: threading.local | None = None

    def _thread_state(self) -> threading.local:
        if self._local is None:
            with _LOCAL_LOCK:
                if self._local is None:
                    self._local = threading.local()
        return self._local

    @property
    def usage(self) -> Usage:
        local = self._thread_state()
        u = getattr(local, "usage", None)
        if u is None:
            u = local.usage = Usage()
        return u

    @usage.setter
    def usage(self, value: Usage) -> None:
        self._thread_state().usage = value


@dataclass
class ModelInfo:
    name: str  # file name or served model name
    path: str  # where it was loaded from
    n_params: int  # for the FLOPs estimate (2 x parameters x tokens)
    n_ctx_train: int  # the model's context length
    chat_template: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class BranchSet(ABC):
    """Live branches of one prompt for step-wise search.

    Branches are named by integer ids. The prompt is the root (id 0). `fork` copies a branch (its cached
    prefix is shared, not recomputed); `extend` grows live branches by one step each, in one batch; `feed`
    appends given text and returns log-probabilities (a PRM scoring a new step); `drop` frees branches.
    Every operation evaluates only tokens that were not evaluated before on that branch.
    """

    @abstractmethod
    def fork(self, branch: int, k: int = 1) -> list[int]: ...

    @abstractmethod
    def drop(self, branches: Sequence[int]) -> None: ...

    @abstractmethod
    def extend(self, branches: Sequence[int], params: SamplingParams) -> list[Completion]: ...

    @abstractmethod
    def feed(
        self,
        branches: Sequence[int],
        texts: Sequence[str],
        positions: Sequence[Sequence[int]],
        token_ids: Sequence[int],
    ) -> list[np.ndarray]:
        """Append texts[i] to branches[i]; return, per branch, log P(token_ids) at `positions` (indices of
        tokens in the appended text, negative counts from its end): an array of shape [len(positions[i]),
        len(token_ids)]."""

    def feed_hidden(
        self, branches: Sequence[int], texts: Sequence[str], positions: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """Append texts[i] to branches[i]; return, per branch, the final hidden states at `positions`: an
        array of shape [len(positions[i]), n_embd]. Only branch sets from `Engine.hidden_branches` have them."""
        raise NotImplementedError("this branch set does not return hidden states (use Engine.hidden_branches)")

    @abstractmethod
    def text(self, branch: int) -> str:
        """The branch's text after the prompt."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> BranchSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Engine(ABC):
    """A loaded model that strategies can sample from and score with."""

    info: ModelInfo
    usage: Usage

    @abstractmethod
    def tokenize(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids; `special` parses special-token text (chat markup) as those tokens."""

    @abstractmethod
    def detokenize(self, tokens: Sequence[int]) -> str: ...

    @abstractmethod
    def sample(self, prompt: str, n: int, params: SamplingParams, watch: Watch | None = None) -> list[Completion]:
        """n continuations of one prompt; the prompt is evaluated once and shared. `watch` (with
        `params.stats_top_k > 0`) sees each continuation token by token and may stop it."""

    @abstractmethod
    def branches(
        self, prompt: str, max_live: int, max_tokens: int, scoring: bool = False, feed_tokens: int = 0
    ) -> BranchSet:
        """A BranchSet rooted at `prompt`, for at most `max_live` live branches of at most `max_tokens`
        new tokens each. `scoring`: branches will only be fed and scored, never extended. `feed_tokens`:
        about how many tokens the caller will feed at once before extending (a hint for the engine's
        layout; 0 when only steps are fed)."""

    @abstractmethod
    def logprobs_at(
        self,
        prefix: str,
        suffixes: Sequence[str],
        positions: Sequence[Sequence[int]],
        token_ids: Sequence[int],
    ) -> list[np.ndarray]:
        """For each prefix + suffixes[i] (texts or token lists): log P(token_ids) of the token following each
        position in positions[i] (token indices within the suffix's tokens; negative counts from its end).
        The prefix is evaluated once. Returns arrays of shape [len(positions[i]), len(token_ids)]."""

    def hidden_at(
        self, prefix: str, suffixes: Sequence[str], positions: Sequence[Sequence[int]], keep: str = ""
    ) -> list[np.ndarray]:
        """Like `logprobs_at`, but the final hidden state (after the output norm) of the token at each
        position: arrays of shape [len(positions[i]), n_embd]. `keep`: a leading part of `prefix` that later
        calls repeat (a PRM's system prompt): it is evaluated in a decode of its own and may stay cached
        between calls, read once per engine instead of once per call, with the same results either way.
        Backends that cannot return hidden states refuse."""
        raise UsageError(f"{self.info.name}: this backend does not return per-token hidden states")

    def hidden_branches(self, prompt: str, max_live: int, max_tokens: int, keep: str = "") -> BranchSet:
        """A scoring-only BranchSet whose `feed_hidden` returns hidden states (see `hidden_at`, also for
        `keep`)."""
        raise UsageError(f"{self.info.name}: this backend does not return per-token hidden states")

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def derive_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a run seeded `seed`: it depends on nothing else (how many are drawn,
    which backend draws them), so sample i is the same in every run and on every backend that honours seeds."""
    s = (int(seed) * 1_000_003 + int(index) * 7_919 + 12_345) & 0xFFFFFFFF
    return s if s != 0xFFFFFFFF else 0  # 0xFFFFFFFF means "random" to llama.cpp


_SEED_STEP = pow(1_000_003, -1, 1 << 32) * 7_919  # derive_seed's index step, carried into the seed


def shift_seed(seed: int, first: int) -> int:
    """The seed whose sample i is sample `first + i` of a run seeded `seed`: derive_seed(shift_seed(s, f), i)
    == derive_seed(s, f + i). A strategy that draws one run's samples in several calls (a warm-up, then the
    rest) so draws exactly the samples one call would have drawn."""
    return (int(seed) + int(first) * _SEED_STEP) & 0xFFFFFFFF
