"""The OpenAI-compatible HTTP backend: every strategy against a server (vLLM, SGLang, llama-server, or
llama-cpp-python's own server) instead of in-process llama.cpp.

Everything goes through the completions API (`/v1/completions`) with raw text prompts: ttc renders its own
prompts, chat templates included, so the server only continues text.

  thinking   (thinking.py) a thinking model's traces in phases (think, resume, answer) under ttc's budget.
  stats      (stream.py) with SamplingParams.stats_top_k > 0, each continuation is one streamed request whose
             top-k log-probabilities give approximate TokenStats; a Watch stops one by closing its stream.
  sample     one request with `n` where the server honours it (probed once: ask n=2, count the choices;
             SGLang's documentation advises against n > 1, so it gets separate requests), else one request
             per continuation, run concurrently up to the concurrency limit. Continuation i gets the same
             seed as in-process (`derive_seed(seed, i)`); a request with n choices gets the seed of its first.
             vLLM also gets the continuations of several prompts (the branches of a search) in few requests:
             copies of one prompt as that prompt with n, distinct prompts as a list; `return_token_ids` gives
             each choice's own token count (else one `usage` sum is shared out by text length).
  branches   a client-side BranchSet (ttc.engine.openai.branches): each branch is the prompt plus the pieces
             appended to it. `extend` sends prompt + branch text with stop=[delimiter] (the server strips the
             stop; ttc re-appends it when include_stop); `fork` copies the pieces. KV reuse is left to the
             server's prefix cache (vLLM, SGLang's radix cache, llama-server's cache_prompt, llama-cpp-python).
  scoring    (scoring.py) log P(token) at a position: a request for the text up to and including that token with
             max_tokens=1, logprobs=k and an equal logit_bias of +100 on the asked tokens. An equal bias
             keeps their ratio exact and makes them the top choices, so both come back in one answer
             when the server reports post-bias log-probs; servers that report raw log-probs (vLLM V1,
             llama-server, llama-cpp-python) always return the chosen token's, and a token that is
             missing from the top k is then read by a second request biased towards it alone. A server
             that returns no log-probabilities, or ignores logit_bias, is a one-line error.
  tokens     the server's tokenizer: /tokenize (vLLM, SGLang, llama-server) or /extras/tokenize (llama-cpp-python).
  dialect    backend.dialect: plain keeps to what every server takes (no n, no prompt lists, no
             prompt_logprobs, no return_token_ids): the "before" of the measured requests per problem.
  usage      prompt and completion tokens from each answer's `usage` (less prompt tokens served from the
             prefix cache when the server reports them), one decode call per request, wall time measured
             here. `usage` is kept per thread, so concurrent problems (ttc bench --concurrency) each see
             their own spend.

What each server kind gets (from /v1/models' `owned_by`): stop strings are told apart from end-of-generation
by vLLM's `stop_reason`, SGLang's `matched_stop`, llama-server's native /completion endpoint (`stop_type`),
and, for llama-cpp-python, the token offsets of `logprobs=0`. Scoring prompts go as token ids where the
server takes them (vLLM, SGLang, llama-server), else as text. llama.cpp servers get top_k=0, min_p=0 and
repeat_penalty=1 so that their sampler matches ttc's (their defaults: top_k 40, min_p 0.05, and 1.1 for
llama-cpp-python's repeat penalty).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from ...errors import TTCRuntimeError, UsageError
from ..base import BranchSet, Completion, Engine, ModelInfo, SamplingParams, ThreadUsage, Usage, Watch, derive_seed
from .branches import OpenAIBranches
from .http import ServerClient, ServerError, choice_stop, split_count, usage_counts
from .scoring import PRMScoring
from .setup import choose_model, model_facts
from .stream import StreamedSampling
from .thinking import sample_thinking

KINDS = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llama-server", "me": "llama-cpp-python", "ttc": "ttc"}
LLAMA_CPP = ("llama-server", "llama-cpp-python")
N_PER_REQUEST = 16  # choices per request when the server honours n


class OpenAIEngine(ThreadUsage, StreamedSampling, PRMScoring, Engine):
    """A model behind an OpenAI-compatible server."""

    thread_safe = True  # ttc bench may run several problems on it at once

    def __init__(
        self,
        base_url: str,
        served_model: str | None = None,
        *,
        model_hint: str | None = None,
        require_hint: bool = False,
        concurrency: int = 32,
        timeout_s: float = 300.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        api_key: str | None = None,
        local_model: str | None = None,
        dialect: str = "auto",
    ):
        self.client = ServerClient(base_url, concurrency, timeout_s, max_retries, backoff_s, api_key)
        try:
            listing = self.client.json("GET", "/models")
            cards = [m for m in (listing.get("data") or []) if isinstance(m, dict) and m.get("id")]
            where = self.client.where
            self.served = choose_model([m["id"] for m in cards], served_model, model_hint, require_hint, where)
            card = next(m for m in cards if m["id"] == self.served)
            self.kind = KINDS.get(str(card.get("owned_by", "")), "openai")
            facts = model_facts(card, self._props() if self.kind == "llama-server" else {}, local_model)
        except BaseException:
            self.client.close()
            raise
        self.plain = dialect == "plain"  # only the requests every server takes (backend.dialect: plain)
        self.info = ModelInfo(
            name=self.served,
            path=self.client.where,
            n_params=facts.n_params,  # 0 when neither the server nor a local copy tells: FLOPs are then 0
            n_ctx_train=facts.n_ctx,
            chat_template=facts.chat_template,
            metadata=facts.metadata,
        )
        self._token_texts = facts.token_texts
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ttc-http")
        self._tok_cache: dict[tuple, tuple[int, ...]] = {}
        self._detok_cache: dict[tuple[int, ...], str] = {}
        self._tok_path: str | None = None
        self._bos: tuple[int, ...] = ()
        self._n_ok: bool | None = None
        self._probe_lock = threading.Lock()  # what the server supports is asked once
        self._stream_lock = threading.Lock()  # llama-cpp-python gets one stream at a time

    # -- accounting (usage: ThreadUsage's, a running total per thread) ------------------------------------------
    @contextmanager
    def timed(self):
        """Charge the wall time of the outermost operation of this thread to its usage."""
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                self.usage.wall_s += time.perf_counter() - t0

    def _charge(self, acct: Usage, prompt: int, generated: int) -> None:
        with self._lock:
            acct.prompt_tokens += prompt
            acct.generated_tokens += generated
            acct.decode_calls += 1

    def _map(self, fn: Callable, items: list) -> list:
        """fn over items, concurrently (bounded by the client's limit), results in order."""
        if len(items) <= 1:
            return [fn(x) for x in items]
        futures = [self._pool.submit(fn, x) for x in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    # -- tokens -----------------------------------------------------------------------------------------------
    def _props(self) -> dict:
        try:
            return self.client.json("GET", "/props", api=False)
        except ServerError:
            return {}

    def _tokenizer_path(self) -> str:
        with self._probe_lock:
            return self._tok_path or self._find_tokenizer()

    def _find_tokenizer(self) -> str:
        order = ["/extras/tokenize", "/tokenize"] if self.kind == "llama-cpp-python" else ["/tokenize"]
        for path in order + [p for p in ("/tokenize", "/extras/tokenize") if p not in order]:
            if self.client.request("POST", path, self._tok_body(path, "a", True, True), api=False).status_code < 400:
                break
        else:
            raise TTCRuntimeError(
                f"server at {self.client.where} has no tokenizer endpoint (/tokenize or /extras/tokenize); "
                "ttc needs one for PRM scoring and step positions"
            )
        if path == "/extras/tokenize":  # it always adds BOS: learn it, to take it off again
            self._bos = tuple(self._tokens_of(self.client.json("POST", path, {"input": ""}, api=False)))
        self._tok_path = path
        return path

    def _tok_body(self, path: str, text: str, add_bos: bool, special: bool) -> dict:
        if path == "/extras/tokenize":
            return {"input": text}
        if self.kind == "llama-server":
            return {"content": text, "add_special": add_bos, "parse_special": special}
        return {"model": self.served, "prompt": text, "add_special_tokens": add_bos}

    @staticmethod
    def _tokens_of(data: dict) -> list[int]:
        return [t["id"] if isinstance(t, dict) else int(t) for t in data.get("tokens", [])]

    def tokenize(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]:
        key = (text, add_bos, special)
        ids = self._tok_cache.get(key)
        if ids is None:
            path = self._tokenizer_path()
            ids = self._tokens_of(
                self.client.json("POST", path, self._tok_body(path, text, add_bos, special), api=False)
            )
            if path == "/extras/tokenize" and not add_bos and self._bos and tuple(ids[: len(self._bos)]) == self._bos:
                ids = ids[len(self._bos) :]
            if len(self._tok_cache) > 4096:
                self._tok_cache.clear()
            ids = self._tok_cache[key] = tuple(ids)
        return list(ids)

    def detokenize(self, tokens: Sequence[int]) -> str:
        key = tuple(int(t) for t in tokens)
        if not key:
            return ""
        text = self._detok_cache.get(key)
        if text is None:
            path = "/extras/detokenize" if self._tokenizer_path() == "/extras/tokenize" else "/detokenize"
            body = {"tokens": list(key)} if self.kind in LLAMA_CPP else {"model": self.served, "tokens": list(key)}
            data = self.client.json("POST", path, body, api=False)
            text = next((data[k] for k in ("text", "prompt", "content") if isinstance(data.get(k), str)), "")
            if len(self._detok_cache) > 4096:
                self._detok_cache.clear()
            self._detok_cache[key] = text
        return text

    def token_text(self, token: int) -> str:
        """A token's text with special tokens spelled out (from a local copy's vocabulary when there is one)."""
        texts = self._token_texts()
        return texts[token] if texts and 0 <= token < len(texts) else self.detokenize([token])

    # -- generation -------------------------------------------------------------------------------------------
    def _uses_n(self) -> bool:
        """Does one request with n return n choices? Asked once (SGLang: no, by its documentation's advice)."""
        if self.plain:
            return False
        with self._probe_lock:
            if self._n_ok is None and self.kind != "sglang":
                body = {"model": self.served, "prompt": "1", "max_tokens": 2, "n": 2, "temperature": 1.0}
                if self.kind in LLAMA_CPP:
                    body["ignore_eos"] = True
                try:  # older llama-server refuses n > 1 with HTTP 500, llama-cpp-python ignores it
                    data = self.client.json("POST", "/completions", body, retry=False)
                except ServerError:
                    self._n_ok = False
                else:
                    choices = data.get("choices") or []
                    self._n_ok = len(choices) == 2
                    # newer llama-server answers n, but its usage counts one choice's tokens: two choices that
                    # ran to max_tokens (2 each) must add up to 4, else the counts would be wrong
                    if self._n_ok and all(c.get("finish_reason") == "length" for c in choices):
                        self._n_ok = usage_counts(data)[1] >= 4
        return bool(self._n_ok)

    def _sampling_body(self, params: SamplingParams, seed: int) -> dict:
        body = {"temperature": params.temperature, "top_p": params.top_p, "seed": seed}
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if self.kind in LLAMA_CPP:  # their defaults (top_k 40, min_p 0.05, repeat 1.1) are not ttc's sampler
            body.update(top_k=max(0, params.top_k), min_p=0.0, repeat_penalty=1.0)
        if params.ignore_eos and self.kind != "openai":
            body["ignore_eos"] = True
        return body

    def _generate(self, prompt, params: SamplingParams, n: int, seed: int, acct: Usage) -> list[Completion]:
        """One request: n continuations of `prompt` (a streamed one with n=1 when statistics are asked); a list
        of prompts (vLLM) gives n continuations of each, prompt by prompt."""
        if params.stats_top_k > 0:
            return [self.stream_one(prompt, params, seed, acct)]
        stops = [s for s in params.stop if s]
        if self.kind == "llama-server" and stops:
            return [self._generate_native(prompt, params, seed, stops, acct)]
        body = {
            "model": self.served,
            "prompt": prompt,
            "max_tokens": params.max_tokens,
            **self._sampling_body(params, seed),
        }
        if n > 1:
            body["n"] = n
        ids = self.kind == "vllm" and not self.plain
        if ids:  # each choice's own token count (and its tokens), rather than one sum shared out by length
            body["return_token_ids"] = True
        if stops:
            body["stop"] = stops
            if self.kind in ("llama-cpp-python", "openai"):  # no stop_reason: tell stop from EOS by the tokens
                body["logprobs"] = 0 if self.kind == "llama-cpp-python" else 1
        data = self.client.json("POST", "/completions", body)
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        want = n * (len(prompt) if isinstance(prompt, list) else 1)
        if len(choices) != want:
            raise TTCRuntimeError(f"server at {self.client.where} returned {len(choices)} completions for {want}")
        prompt_n, generated = usage_counts(data)
        self._charge(acct, prompt_n, generated)
        if ids and all(isinstance(c.get("token_ids"), list) for c in choices):
            counts = [len(c["token_ids"]) for c in choices]
        else:
            counts = split_count(generated, [c.get("text") or "" for c in choices])
        return [self._completion(c, stops, params.include_stop, k) for c, k in zip(choices, counts)]

    @staticmethod
    def _completion(choice: dict, stops: list[str], include_stop: bool, n_generated: int) -> Completion:
        text, stop = choice.get("text") or "", None
        tokens = [int(t) for t in choice.get("token_ids") or []]  # vLLM's return_token_ids (stop tokens included)
        if choice.get("finish_reason") == "stop":
            stop = choice_stop(choice, text, stops)
            reason = "stop" if stop is not None else "eos"
            if stop is not None and include_stop:
                text += stop
        else:
            reason = "length"
        return Completion(text=text, tokens=tokens, finish_reason=reason, stop=stop, n_generated=n_generated)

    def _generate_native(self, prompt, params, seed, stops, acct) -> Completion:
        """llama-server's own /completion, which says whether a stop string or EOS ended the text."""
        body = {"prompt": prompt, "n_predict": params.max_tokens, "stop": stops, "cache_prompt": True}
        body.update(self._sampling_body(params, seed))
        data = self.client.json("POST", "/completion", body, api=False)
        text, word = data.get("content") or "", data.get("stopping_word") or ""
        kind = data.get("stop_type") or (
            "eos" if data.get("stopped_eos") else "word" if data.get("stopped_word") else "limit"
        )
        evaluated = (data.get("timings") or {}).get("prompt_n", data.get("tokens_evaluated", 0))
        generated = int(data.get("tokens_predicted") or 0)
        self._charge(acct, int(evaluated or 0), generated)
        choice = {"text": text, "finish_reason": "stop" if kind in ("eos", "word") else "length"}
        choice["stop_reason"] = word if kind == "word" else None
        return self._completion(choice, stops, params.include_stop, generated)

    def generate_many(self, prompts: list[str], params: SamplingParams, first_index: int = 0) -> list[Completion]:
        """One continuation of each prompt, concurrently; prompt j samples with seed (params.seed, first_index + j)."""
        acct = self.usage
        if self.kind == "vllm" and not self.plain and len(prompts) > 1 and params.stats_top_k == 0:
            return self._generate_grouped(prompts, params, first_index, acct)
        jobs = list(enumerate(prompts))

        def one(j):
            return self._generate(j[1], params, 1, derive_seed(params.seed, first_index + j[0]), acct)

        done = self._map(one, jobs)
        return [c for cs in done for c in cs]

    def _generate_grouped(self, prompts: list[str], params: SamplingParams, first_index: int, acct) -> list:
        """vLLM: the prompts in few requests. Copies of one prompt (the forks of a search) are one prompt with
        `n` (vLLM gives choice i the seed + i, so copies differ), and prompts wanting the same n go together
        as a list; at temperature 0, where vLLM refuses n > 1, every prompt goes once. A request gets the
        seed of its first prompt."""
        groups: dict[str, list[int]] = {}
        for j, p in enumerate(prompts):
            groups.setdefault(p, []).append(j)
        if params.temperature <= 0:
            batches = [(1, [[j] for j in range(len(prompts))])]
        else:
            by_n: dict[int, list[list[int]]] = {}
            for where in groups.values():
                by_n.setdefault(len(where), []).append(where)
            batches = sorted(by_n.items())
        jobs = []
        for n, members in batches:
            per = max(1, N_PER_REQUEST // n)  # about N_PER_REQUEST choices per request
            jobs += [(n, members[i : i + per]) for i in range(0, len(members), per)]

        def one(job):
            n, members = job
            seed = derive_seed(params.seed, first_index + min(members[0]))
            return self._generate([prompts[m[0]] for m in members], params, n, seed, acct)

        out: list[Completion | None] = [None] * len(prompts)
        for (n, members), comps in zip(jobs, self._map(one, jobs)):
            for k, where in enumerate(members):
                for i, j in enumerate(where):
                    out[j] = comps[k * n + i]
        return out

    def sample(self, prompt: str, n: int, params: SamplingParams, watch: Watch | None = None) -> list[Completion]:
        if n < 1:
            raise UsageError(f"number of samples must be at least 1, got {n}")
        with self.timed():
            if params.thinking is not None and not params.thinking.closed:  # ttc enforces the block (thinking.py)
                return sample_thinking(self, prompt, n, params)
            if params.stats_top_k > 0:  # one streamed request per continuation (stream.py)
                return self.sample_streamed(prompt, n, params, watch)
            if n > 1 and self._uses_n():
                acct = self.usage
                chunks = [(i, min(N_PER_REQUEST, n - i)) for i in range(0, n, N_PER_REQUEST)]

                def chunk(c):
                    return self._generate(prompt, params, c[1], derive_seed(params.seed, c[0]), acct)

                done = self._map(chunk, chunks)
                return [c for cs in done for c in cs]
            return self.generate_many([prompt] * n, params)

    def branches(
        self, prompt: str, max_live: int, max_tokens: int, scoring: bool = False, feed_tokens: int = 0
    ) -> BranchSet:
        return OpenAIBranches(self, prompt, scoring)
