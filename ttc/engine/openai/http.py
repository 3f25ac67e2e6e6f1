"""HTTP to an OpenAI-compatible server, and reading what such servers answer.

`ServerClient` is one httpx client per server with a limit on requests in flight (shared by every thread
that uses it), connect and read timeouts, and retries with exponential backoff and jitter on 429, 5xx and
connection errors (honouring Retry-After); after the last try it raises one line, "server at URL did not
answer after N tries: ...". A read timeout is not retried: the server is still working on the request.
`stream` opens a streamed request (server-sent events) the same way; closing it closes the connection,
which servers take as the client going away (the Watch of a streamed sample stops one so).
The API key (TTC_API_KEY, else OPENAI_API_KEY) goes only into the Authorization header: never into a
message, a log line or a result. URLs in messages lose any user:password and query.

The parsers below turn the several dialects of the completions API into plain values:
  stop reasons   vLLM `stop_reason`, SGLang `matched_stop`, llama-server's native `stop_type`, and, for
                 servers that say nothing (llama-cpp-python), the token offsets of `logprobs`
  log-probs      the legacy `{tokens, token_logprobs, top_logprobs}` form (vLLM, SGLang, llama-cpp-python;
                 keys are token strings, or "token_id:N" with vLLM's return_tokens_as_token_ids) and the
                 `{content: [{id, token, logprob, top_logprobs}]}` form of llama-server
"""

from __future__ import annotations

import json as _json
import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ...errors import TTCRuntimeError, UsageError

log = logging.getLogger("ttc.engine.openai")

KEY_VARIABLES = ("TTC_API_KEY", "OPENAI_API_KEY")  # the first one set is used
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_WAIT_S = 30.0  # longest single backoff (a Retry-After above it is cut to it)


def api_key_from_env() -> str | None:
    for name in KEY_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def redact(url: str) -> str:
    """The URL without user:password, query or fragment (what messages may show)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def split_base_url(base_url: str) -> tuple[str, str]:
    """(root, api): the server's root (where /tokenize lives) and its OpenAI prefix (root + /v1)."""
    url = (base_url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--base-url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {redact(url)!r}")
    root = url[: -len("/v1")] if url.endswith("/v1") else url
    return root, root + "/v1"


def _short(text: str, n: int = 200) -> str:
    return " ".join(str(text).split())[:n]


def error_message(response) -> str:
    """The server's own error text from a JSON or plain error body, on one line."""
    try:
        data = response.json()
    except Exception:
        return _short(response.text) or response.reason_phrase
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message", data)))
        if isinstance(err, dict):
            err = err.get("message", err)
        return _short(err)
    return _short(data)


class ServerError(TTCRuntimeError):
    """The server answered with an error status that retrying will not mend (4xx, or any status of a probe)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class ServerClient:
    """Requests to one server: a shared concurrency limit, timeouts, retries, one-line errors."""

    def __init__(
        self,
        base_url: str,
        concurrency: int = 32,
        timeout_s: float = 300.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        api_key: str | None = None,
    ):
        import httpx

        if concurrency < 1:
            raise UsageError(f"backend.concurrency must be at least 1, got {concurrency}")
        if timeout_s <= 0:
            raise UsageError(f"backend.timeout_s must be positive, got {timeout_s}")
        if max_retries < 0:
            raise UsageError(f"backend.max_retries must be 0 or more, got {max_retries}")
        self.root, self.api = split_base_url(base_url)
        self.where = redact(base_url)
        self.max_retries, self.backoff_s, self.timeout_s = max_retries, backoff_s, timeout_s
        key = api_key if api_key is not None else api_key_from_env()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency),
        )
        self._slots = threading.BoundedSemaphore(concurrency)
        self._said_lock, self._said = threading.Lock(), {}  # retry round -> when it was last said
        self._httpx = httpx

    def close(self) -> None:
        self._http.close()

    def _say_retry(self, reason: str, k: int, of: int, delay: float) -> None:
        """A retry on stderr (through logging): one line per round of retries, however many requests retry."""
        now = time.monotonic()
        with self._said_lock:
            if now - self._said.get(k, -1e9) < 1.0:
                return
            self._said[k] = now
        log.warning("ttc: server at %s: %s; retry %d/%d in %.1fs", self.where, reason, k, of, delay)

    def _back_off(self, attempt: int, tries: int, reason: str, wait: float | None) -> None:
        """Before try `attempt + 2` (none after the last): the server's Retry-After, else exponential
        back-off with jitter, capped; said once per round."""
        if attempt + 1 >= tries:
            return
        delay = wait if wait is not None else self.backoff_s * (2**attempt) * (0.5 + random.random())
        delay = min(MAX_WAIT_S, max(0.0, delay))
        self._say_retry(reason, attempt + 1, tries - 1, delay)
        time.sleep(delay)

    def url(self, path: str, api: bool = True) -> str:
        return (self.api if api else self.root) + path

    def request(self, method: str, path: str, body: dict | None = None, api: bool = True, retry: bool = True):
        """The response to METHOD path. Transport failures and the statuses worth retrying (429, 5xx) are
        tried 1 + max_retries times, then raise a TTCRuntimeError; with retry=False there is one try and
        any status is returned (a probe: a server that refuses an option with HTTP 500 refuses it)."""
        url = self.url(path, api)
        tries = 1 + (self.max_retries if retry else 0)
        last = ""
        for attempt in range(tries):
            wait = None
            try:
                with self._slots:
                    response = self._http.request(method, url, json=body)
            except self._httpx.ReadTimeout:  # the server is busy with it: sending it again adds to its load
                raise self._timed_out(method, path) from None
            except self._httpx.TransportError as e:
                last = f"{_transport_reason(e)} ({type(e).__name__})"
            else:
                if response.status_code not in RETRY_STATUS or not retry:
                    return response
                last = f"HTTP {response.status_code}: {error_message(response)}"
                wait = _retry_after(response)
            self._back_off(attempt, tries, last, wait)
        raise TTCRuntimeError(f"server at {self.where} did not answer after {tries} tries: {last}")

    @contextmanager
    def stream(self, path: str, body: dict, api: bool = True) -> Iterator[Iterator[dict]]:
        """POST a streamed request; yields an iterator over its server-sent events (parsed JSON, up to
        "[DONE]"). Opening it is retried as `request` is; leaving the block closes the connection, which is
        how a server is told to stop generating. A JSON answer (a server that ignores `stream`) is one event.
        The request holds one of the concurrency slots until the block is left."""
        url, what = self.url(path, api), f"POST {'/v1' if api else ''}{path}"
        tries, last = 1 + self.max_retries, ""
        for attempt in range(tries):
            wait = None
            with self._slots:
                try:
                    opened = self._http.stream("POST", url, json=body)
                    response = opened.__enter__()
                except self._httpx.ReadTimeout:
                    raise self._timed_out("POST", path) from None
                except self._httpx.TransportError as e:
                    last = f"{_transport_reason(e)} ({type(e).__name__})"
                else:
                    try:
                        if response.status_code in RETRY_STATUS:
                            response.read()
                            last, wait = (
                                f"HTTP {response.status_code}: {error_message(response)}",
                                _retry_after(response),
                            )
                        elif response.status_code >= 400:
                            response.read()
                            raise self._refusal(response, what)
                        else:
                            yield self._events(response, path)
                            return
                    finally:
                        opened.__exit__(None, None, None)
            self._back_off(attempt, tries, last, wait)
        raise TTCRuntimeError(f"server at {self.where} did not answer after {tries} tries: {last}")

    def _events(self, response, path: str) -> Iterator[dict]:
        try:
            if "json" in response.headers.get("content-type", "") and "event-stream" not in response.headers.get(
                "content-type", ""
            ):
                yield _json.loads(response.read())
                return
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, ": ping" comments, "event:" names
                payload = line[len("data:") :].strip()
                if payload == "[DONE]":
                    return
                if payload:
                    yield _json.loads(payload)
        except self._httpx.ReadTimeout:
            raise self._timed_out("POST", path) from None
        except self._httpx.TransportError as e:
            raise TTCRuntimeError(
                f"server at {self.where} broke off a streamed answer to POST {path}: {_transport_reason(e)}"
            ) from None
        except ValueError:
            raise TTCRuntimeError(f"server at {self.where} streamed a non-JSON event for POST {path}") from None

    def _timed_out(self, method: str, path: str) -> TTCRuntimeError:
        return TTCRuntimeError(
            f"server at {self.where} did not answer {method} {path} within {self.timeout_s:g} s; raise "
            "backend.timeout_s, or lower backend.concurrency to the requests the server runs at once"
        )

    def _refusal(self, r, what: str) -> ServerError:
        if r.status_code in (401, 403):
            return ServerError(
                f"server at {self.where} refused the API key (HTTP {r.status_code}); set TTC_API_KEY or "
                "OPENAI_API_KEY to a key it accepts",
                r.status_code,
            )
        return ServerError(
            f"server at {self.where} refused {what} (HTTP {r.status_code}): {error_message(r)}", r.status_code
        )

    def json(self, method: str, path: str, body: dict | None = None, api: bool = True, retry: bool = True) -> Any:
        """The JSON body of a successful response; a ServerError (one line) for any other status."""
        r = self.request(method, path, body, api=api, retry=retry)
        if r.status_code >= 400:
            raise self._refusal(r, f"{method} {'/v1' if api else ''}{path}")
        try:
            return r.json()
        except ValueError:
            raise TTCRuntimeError(f"server at {self.where} sent a non-JSON answer to {method} {path}") from None


def _transport_reason(e: Exception) -> str:
    text = _short(str(e), 120)
    name = type(e).__name__
    if "Connect" in name and ("refused" in text.lower() or "errno 111" in text.lower() or not text):
        return "connection refused"
    if "Timeout" in name:
        return "timed out"
    return text or name


def _retry_after(response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


# -- reading answers ------------------------------------------------------------------------------------------
def choice_stop(choice: dict, text: str, stops: Sequence[str]) -> str | None:
    """Which stop string ended a choice whose finish_reason is "stop" (None: end of generation).

    vLLM sets `stop_reason` (the string, or a token id / None for EOS), SGLang `matched_stop` (likewise).
    Servers that say neither are read from `logprobs` (asked for with logprobs=0): every sampled token is
    listed there, also those of a stop string the text was cut before, so tokens reaching past the text
    mean a stop string matched."""
    if not stops:
        return None
    for key in ("stop_reason", "matched_stop"):
        if key in choice:
            value = choice[key]
            return value if isinstance(value, str) and value in stops else None
    lp = choice.get("logprobs")
    if isinstance(lp, dict) and lp.get("tokens") and lp.get("text_offset"):
        start = lp["text_offset"][0]
        cut = start + len(text)
        tail = [t or "" for t, off in zip(lp["tokens"], lp["text_offset"]) if off + len(t or "") > cut]
        if not tail:
            return None
        rest = "".join(tail)
        found = [(rest.find(s), i, s) for i, s in enumerate(stops) if rest.find(s) >= 0]
        return min(found)[2] if found else stops[0]
    return None


def top_logprobs(choice: dict) -> tuple[tuple[Any, float] | None, list[tuple[Any, float]]]:
    """(chosen, top) for the first generated token of a choice: (key, logprob) pairs where a key is a token
    id (int) when the server gives ids, else the token's text."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None, []
    content = lp.get("content")
    if isinstance(content, list) and content:  # llama-server (and chat-style answers)
        first = content[0]
        chosen = (_key(first.get("id"), first.get("token")), float(first["logprob"]))
        top = [(_key(t.get("id"), t.get("token")), float(t["logprob"])) for t in first.get("top_logprobs") or []]
        return chosen, top
    tokens, values = lp.get("tokens") or [], lp.get("token_logprobs") or []
    chosen = (_key(None, tokens[0]), float(values[0])) if tokens and values and values[0] is not None else None
    tops = lp.get("top_logprobs") or []
    top = [(_key(None, k), float(v)) for k, v in (tops[0] or {}).items()] if tops else []
    return chosen, top


def _key(token_id, token_text):
    if isinstance(token_id, int):
        return token_id
    if isinstance(token_text, str) and token_text.startswith("token_id:"):
        try:
            return int(token_text.split(":", 1)[1])
        except ValueError:
            pass
    return token_text


def usage_counts(data: dict) -> tuple[int, int]:
    """(prompt tokens evaluated, tokens generated) from an answer's `usage`; prompt tokens served from the
    server's prefix cache are left out when the server reports them (prompt_tokens_details.cached_tokens)."""
    usage = data.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return max(0, prompt - cached), int(usage.get("completion_tokens") or 0)


def split_count(total: int, texts: Sequence[str]) -> list[int]:
    """Share `total` generated tokens among choices in proportion to their text (servers report one sum for
    a request with n choices); every choice gets at least one, and the shares add up to the total when it
    is at least the number of choices."""
    k = len(texts)
    if k == 1:
        return [total]
    weights = [len(t) + 1 for t in texts]
    spare = max(0, total - k)
    shares = [1 + spare * w // sum(weights) for w in weights]
    for i in range(total - sum(shares)):
        shares[i % k] += 1
    return shares
