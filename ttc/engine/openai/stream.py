"""Streamed samples with per-token statistics (SamplingParams.stats_top_k > 0), and the Watch over HTTP.

Each continuation is one streamed request (`stream: true`, server-sent events) seeded derive_seed(seed, i)
as every sample is, run concurrently. Each token's statistics come from the top log-probabilities the server
sends with it, so they are approximations of the in-process ones (TokenStats.approximate = True):
  k           min(stats_top_k, 20): vLLM refuses more than its --max-logprobs (20 by default), OpenAI's
              legacy completions give at most 5. TokenStats.top_k is the k used.
  confidence  -(1/k) * the sum of the k largest log-probabilities received: the server's top k (the sampled
              token's entry, added when it is outside them, falls off). Servers that key the entries by their
              decoded text (llama-cpp-python, SGLang) merge tokens that decode alike (a token cut inside a
              UTF-8 character reads "") into one entry; each entry lost so is counted at the smallest value
              received. vLLM is asked for token-id keys (return_tokens_as_token_ids) and llama-server's entries
              carry ids, so neither merges.
  logprob     the sampled token's log-probability as the server reports it (from the raw logits on vLLM V1,
              llama-server and llama-cpp-python)
  certainty   NaN: KL(uniform || p) needs the whole row.
A Watch that stops a continuation closes its stream; vLLM aborts a request whose client went away,
llama-server frees the slot, llama-cpp-python cancels the generation (it may have sampled a few tokens
ahead: it buffers up to 10 events). The completion keeps, and ttc counts, the tokens received.
Stop strings: vLLM and SGLang get them and say which one matched (stop_reason, matched_stop), llama-server's
native /completion stream says stop_type; servers whose stream says neither (llama-cpp-python, unknown ones)
get none: ttc finds them in the streamed text and closes the stream there, as the in-process engine stops.
Counts: the server's usage where it sends one (vLLM, SGLang and OpenAI with stream_options.include_usage,
llama-server's last event), else the tokens received and the prompt's tokens from the tokenizer endpoint.
llama-cpp-python's server interrupts a stream when another request arrives (its --interrupt_requests
default): ttc sends it one stream at a time and says so in one line if another client interrupts one.
`StreamedSampling` is mixed into OpenAIEngine and uses only what it names below of it.
"""

from __future__ import annotations

import math
import threading
from contextlib import nullcontext

import numpy as np

from ...errors import TTCRuntimeError
from ..base import Completion, SamplingParams, TokenStats, Usage, Watch, derive_seed
from .http import choice_stop, usage_counts

MAX_TOP = 20  # vLLM's default --max-logprobs
MAX_TOP_BY_KIND = {"openai": 5}  # OpenAI's legacy completions
SERVER_STOPS = ("vllm", "sglang")  # streams that say which stop string matched
NATIVE = "llama-server"  # streamed on its own /completion, which says stop_type


def top_confidence(values: list[float], k: int) -> float:
    """-(1/k) * sum of the k largest values; entries missing (merged by text keys) count as the smallest."""
    top = sorted(values, reverse=True)[:k]
    if not top:
        return math.nan
    top += [top[-1]] * (k - len(top))
    return -sum(top) / k


class TokenRows:
    """Per-token statistics of one continuation as it grows: float32 columns confidence, logprob, certainty."""

    def __init__(self, k: int):
        self.k, self.n = k, 0
        self.data = np.full((3, 64), np.nan, dtype=np.float32)

    def add(self, confidence: float, logprob: float) -> None:
        if self.n == self.data.shape[1]:
            self.data = np.concatenate([self.data, np.full_like(self.data, np.nan)], axis=1)
        self.data[0, self.n], self.data[1, self.n] = confidence, logprob
        self.n += 1

    def stats(self, copy: bool = False) -> TokenStats:
        cols = [c[: self.n].copy() if copy else c[: self.n] for c in self.data]
        return TokenStats(confidence=cols[0], logprob=cols[1], certainty=cols[2], top_k=self.k, approximate=True)


def event_tokens(data: dict, native: bool) -> tuple[str, list[tuple[float, list[float]]], bool]:
    """(text, [(log P(sampled token), its top log-probabilities)] per token, whether log-probs came) of one
    event: llama-server's native `completion_probabilities`, or a completions choice's `logprobs` in the
    legacy form (keys are token text or "token_id:N") or the `content` form."""
    if native:
        rows = data.get("completion_probabilities")
        text = data.get("content") or ""
        if not isinstance(rows, list):
            return text, [], False
        return text, [(float(r["logprob"]), _distinct(r.get("top_logprobs"))) for r in rows], True
    choices = data.get("choices") or []
    if not choices:
        return "", [], False  # the usage event
    choice = choices[0]
    text, lp = choice.get("text") or "", choice.get("logprobs")
    if not isinstance(lp, dict):
        return text, [], False
    if isinstance(lp.get("content"), list):
        return text, [(float(e["logprob"]), _distinct(e.get("top_logprobs"))) for e in lp["content"]], True
    values, tops = lp.get("token_logprobs") or [], lp.get("top_logprobs") or []
    out = []
    for i, v in enumerate(values):
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        out.append((math.nan if v is None else float(v), [float(x) for x in top.values()]))
    return text, out, bool(values)


def _distinct(entries) -> list[float]:
    """Log-probabilities of a list of {id, token, logprob} entries, one per token id (or text)."""
    seen: dict = {}
    for e in entries or []:
        seen.setdefault(e.get("id", e.get("token")), float(e["logprob"]))
    return list(seen.values())


def first_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    hits = [(text.find(s), i, s) for i, s in enumerate(stops) if s in text]
    return (min(hits)[0], min(hits)[2]) if hits else None


class StreamedSampling:
    """Streamed continuations with TokenStats for an engine with `kind`, `client`, `served`, `usage`,
    `tokenize`, `_sampling_body`, `_charge`, `_map` and `_stream_lock` (OpenAIEngine)."""

    def sample_streamed(self, prompt: str, n: int, params: SamplingParams, watch: Watch | None) -> list[Completion]:
        acct, lock = self.usage, threading.Lock()  # the watch is called from one thread at a time

        def one(i: int) -> Completion:
            return self.stream_one(prompt, params, derive_seed(params.seed, i), acct, i, watch, lock)

        return self._map(one, list(range(n)))

    def _stream_request(self, prompt: str, params: SamplingParams, seed: int, k: int, stops: list[str]):
        """(path, under /v1?, body) of one streamed continuation."""
        if self.kind == NATIVE:
            body = {"prompt": prompt, "n_predict": params.max_tokens, "stream": True, "n_probs": k,
                    "post_sampling_probs": False, "cache_prompt": True}  # fmt: skip
            body.update(self._sampling_body(params, seed))
            if stops:
                body["stop"] = stops
            return "/completion", False, body
        body = {"model": self.served, "prompt": prompt, "max_tokens": params.max_tokens, "stream": True,
                "logprobs": k, **self._sampling_body(params, seed)}  # fmt: skip
        if stops and self.kind in SERVER_STOPS:
            body["stop"] = stops
        if self.kind == "vllm":
            body["return_tokens_as_token_ids"] = True
        if self.kind in ("vllm", "sglang", "openai"):
            body["stream_options"] = {"include_usage": True}
        return "/completions", True, body

    def _prompt_count(self, prompt: str) -> int:
        try:
            return len(self.tokenize(prompt))
        except TTCRuntimeError:  # no tokenizer endpoint: the prompt's tokens are unknown
            return 0

    def stream_one(
        self, prompt: str, params: SamplingParams, seed: int, acct: Usage, index: int = 0,
        watch: Watch | None = None, lock: threading.Lock | None = None,
    ) -> Completion:  # fmt: skip
        """One streamed continuation of `prompt`; `watch` sees it token by token (as continuation `index`)."""
        stops = [s for s in params.stop if s]
        k = max(1, min(params.stats_top_k, MAX_TOP_BY_KIND.get(self.kind, MAX_TOP)))
        path, api, body = self._stream_request(prompt, params, seed, k, stops)
        native = self.kind == NATIVE
        mine = stops if not native and self.kind not in SERVER_STOPS else []  # stop strings ttc looks for
        serial = self.kind == "llama-cpp-python"
        rows = TokenRows(k)
        # llama-cpp-python cuts a stream short for any other request, this one's /tokenize included: the
        # prompt is counted and the stream read under one lock
        with self._stream_lock if serial else nullcontext():
            prompt_n = self._prompt_count(prompt) if serial else None
            with self.client.stream(path, body, api) as events:
                read = self._read_events(events, rows, native, mine, stops, watch, lock, index)
        text, stop, killed, end, usage = read
        reason, stop = ("killed", None) if killed else self._reason(end, stop)
        if stop is not None and params.include_stop:
            text += stop
        generated = max(rows.n, usage[1] if usage else 0)
        if usage is not None:
            prompt_n = usage[0]
        elif prompt_n is None:
            prompt_n = self._prompt_count(prompt)
        self._charge(acct, prompt_n, generated)
        comp = Completion(text=text, tokens=[], finish_reason=reason, stop=stop, n_generated=generated,
                          stats=rows.stats(copy=True))  # fmt: skip
        if watch is not None:
            with lock or nullcontext():
                watch.finished(index, comp)
        return comp

    def _read_events(self, events, rows: TokenRows, native: bool, mine, stops, watch, lock, index: int):
        """Read a stream's events into `rows`: (text, stop, killed, end, usage); a Watch may kill it."""
        text, stop, killed, end, usage = "", None, False, None, None
        for data in events:
            if not isinstance(data, dict) or "error" in data:
                err = data.get("error") if isinstance(data, dict) else data
                where = self.client.where
                raise TTCRuntimeError(f"server at {where} broke off a streamed completion: {_one_line(err)}")
            try:
                piece, tokens, has = event_tokens(data, native)
            except (KeyError, TypeError, ValueError, AttributeError):
                raise TTCRuntimeError(
                    f"server at {self.client.where} streamed a malformed log-probability entry: {_one_line(data)}"
                ) from None
            if piece and not has:
                raise self._no_logprobs(rows.k)
            text += piece
            for lp, top in tokens:
                rows.add(top_confidence(top, rows.k), lp)
                if watch is not None and not killed:
                    with lock or nullcontext():
                        killed = not watch.step(index, rows.stats())
            hit = first_stop(text, mine) if mine else None
            if hit is not None:
                return text[: hit[0]], hit[1], killed, "stop", usage
            if killed:
                break
            end, usage = self._event_end(data, text, stops, native, end, usage)
        return text, stop, killed, end, usage

    @staticmethod
    def _event_end(data: dict, text: str, stops: list[str], native: bool, end, usage):
        """(how it ended so far, usage so far) after one event: end is ("eos" | "stop" | "length", stop)."""
        if native:
            if data.get("stop") is True:
                kind = data.get("stop_type") or ("eos" if data.get("stopped_eos") else "limit")
                word = data.get("stopping_word") or ""
                if kind == "word":
                    end = ("stop", word if word in stops else (stops[0] if stops else word))
                else:
                    end = ("eos", None) if kind == "eos" else ("length", None)
                evaluated = (data.get("timings") or {}).get("prompt_n", data.get("tokens_evaluated", 0))
                usage = (int(evaluated or 0), int(data.get("tokens_predicted") or 0))
            return end, usage
        choice = (data.get("choices") or [{}])[0]
        reason = choice.get("finish_reason")
        if reason == "stop":
            stop = (
                choice_stop(choice, text, stops) if any(k in choice for k in ("stop_reason", "matched_stop")) else None
            )
            end = ("stop", stop) if stop is not None else ("eos", None)
        elif reason:
            end = ("length", None)
        if data.get("usage"):
            usage = usage_counts(data)
        return end, usage

    def _reason(self, end, stop) -> tuple[str, str | None]:
        if end == "stop":  # found by ttc in the text
            return "stop", stop
        if end is None:
            if self.kind == "llama-cpp-python":
                raise TTCRuntimeError(
                    f"server at {self.client.where} (llama-cpp-python) cut a streamed completion short: it does when "
                    "another request arrives (start it with --interrupt_requests False) or when it fails (see its log)"
                )
            raise TTCRuntimeError(f"server at {self.client.where} ended a streamed completion without a finish reason")
        return end

    def _no_logprobs(self, k: int) -> TTCRuntimeError:
        asked = f"n_probs={k} on /completion" if self.kind == NATIVE else f"logprobs={k} on /v1/completions"
        return TTCRuntimeError(
            f"server at {self.client.where} ({self.kind}) streamed tokens without log-probabilities ({asked}); "
            "token statistics (confidence, stats_top_k) need them"
        )


def _one_line(value) -> str:
    if isinstance(value, dict):
        value = value.get("message", value)
    return " ".join(str(value).split())[:200]
