"""Reading OpenAI requests for `ttc serve`: every field is either honoured or refused by name.

A request becomes a `Plan`: which problems (one per prompt, or the chat's user message), which strategy at
which budget (from the model name `ttc/STRATEGY@BUDGET`, or the body's `ttc` field, else the preset's),
the sampling overrides, the seed of each of the `n` runs, and the stop strings that cut the returned text.
A model named after the policy itself (`raw`) is a plain completion of the prompt, no strategy: what
`ttc solve --backend openai` needs of a server.

Errors are `ApiError`s, which the app turns into OpenAI's error body with their status.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any

PREFIX = "ttc"  # model names: ttc, ttc/STRATEGY, ttc/STRATEGY@BUDGET
MAX_N = 16  # choices per request
MAX_STOP = 4  # stop strings, as OpenAI allows
NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {}, "logprobs": False, "echo": False}
COMMON = {"model", "temperature", "top_p", "top_k", "max_tokens", "seed", "stop", "n", "stream", "stream_options",
          "user", "ttc", *NEUTRAL}  # fmt: skip
CHAT = COMMON | {"messages", "max_completion_tokens", "response_format", "top_logprobs", "tools", "tool_choice",
                 "parallel_tool_calls"}  # fmt: skip
COMPLETIONS = COMMON | {"prompt", "best_of", "suffix", "ignore_eos"}
TTC_KEYS = {"strategy", "budget", "think_budget", "opts"}


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):  # fmt: skip
        super().__init__(message)
        self.message, self.status, self.param, self.code, self.kind = message, status, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Plan:
    model: str  # as the client named it
    raw: bool  # a plain completion of the policy (no strategy)
    problems: list[str]  # one per prompt
    strategy: str | None = None  # None: the preset's default
    budget: int = 16
    options: dict[str, Any] = field(default_factory=dict)
    think_budget: int | None = None
    seeds: list[int] = field(default_factory=list)  # one per run (n of them)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    stream: bool = False
    include_usage: bool = False
    chat: bool = True


def _number(body: dict, key: str, low: float, high: float, integer: bool = False):
    v = body.get(key)
    if v is None:
        return None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and integer:
        ok = float(v).is_integer()
    if not ok or not low <= v <= high:
        kind = "an integer" if integer else "a number"
        raise ApiError(f"'{key}' must be {kind} in [{low:g}, {high:g}], got {v!r}", param=key)
    return int(v) if integer else float(v)


def _refuse_unknown(body: dict, allowed: set[str]) -> None:
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise ApiError(f"ttc serve does not support the field(s) {', '.join(map(repr, unknown))}", param=unknown[0])
    for key, neutral in NEUTRAL.items():  # accepted only where they change nothing
        v = body.get(key)
        if v is not None and (v is not False if key == "logprobs" else v != neutral):
            raise ApiError(f"ttc serve cannot honour '{key}' = {v!r} (only {neutral!r} or absent)", param=key)
    for key in ("tools", "tool_choice", "parallel_tool_calls", "top_logprobs", "best_of", "suffix"):
        v = body.get(key)
        if v is not None and not (key == "best_of" and v == body.get("n", 1)) and v != []:
            raise ApiError(f"ttc serve cannot honour '{key}' (tool calls, log-probabilities, best_of and suffix "
                           "are not supported)", param=key)  # fmt: skip
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise ApiError("ttc serve answers in text only: 'response_format' must be {\"type\": \"text\"}",
                       param="response_format")  # fmt: skip


def parse_model(name: Any, raw_names: set[str]) -> tuple[bool, str | None, int | None, dict[str, Any]]:
    """(raw, strategy, budget, options) of a model name: a raw model, `ttc`, `ttc/STRATEGY[:k=v...][@BUDGET]`."""
    from ..strategies import get_strategy
    from ..strategies.base import parse_variant

    if not isinstance(name, str) or not name:
        raise ApiError("'model' is required: ttc, ttc/STRATEGY, ttc/STRATEGY@BUDGET or the policy's name",
                       param="model")  # fmt: skip
    if name in raw_names:
        return True, None, None, {}
    if name == PREFIX:
        return False, None, None, {}
    if not name.startswith(PREFIX + "/"):
        raise ApiError(f"model '{name}' is not served here (GET /v1/models lists them)", 404, "model",
                       "model_not_found")  # fmt: skip
    spec, at, budget_text = name[len(PREFIX) + 1 :].partition("@")
    budget = None
    if at:
        if not budget_text.isdigit():
            raise ApiError(f"model '{name}': the budget after '@' must be a positive integer", param="model")
        budget = int(budget_text)
    try:
        get_strategy(spec)
        strategy, options = parse_variant(spec)
    except Exception as e:  # UsageError: unknown strategy, malformed variant
        raise ApiError(f"model '{name}': {e}", 404, "model", "model_not_found") from None
    return False, spec, budget, options


def _ttc_field(body: dict, plan: Plan, strategy: str | None, budget: int | None) -> None:
    t = body.get("ttc")
    if t is None:
        t = {}
    if not isinstance(t, dict):
        raise ApiError("'ttc' must be an object {strategy, budget, think_budget, opts}", param="ttc")
    unknown = sorted(set(t) - TTC_KEYS)
    if unknown:
        raise ApiError(f"'ttc' has unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(TTC_KEYS))})",
                       param=f"ttc.{unknown[0]}")  # fmt: skip
    if plan.raw and any(t.get(k) is not None for k in TTC_KEYS):
        raise ApiError(f"model '{plan.model}' is the plain policy: a 'ttc' strategy needs a ttc/... model", param="ttc")
    s = t.get("strategy")
    if s is not None:
        if not isinstance(s, str):
            raise ApiError("'ttc.strategy' must be a string", param="ttc.strategy")
        if strategy is not None and s != strategy:
            raise ApiError(f"model '{plan.model}' names strategy '{strategy}' but ttc.strategy is '{s}'",
                           param="ttc.strategy")  # fmt: skip
        strategy = s
    b = t.get("budget")
    if b is not None:
        if isinstance(b, bool) or not isinstance(b, int):
            raise ApiError(f"'ttc.budget' must be a positive integer, got {b!r}", param="ttc.budget")
        if budget is not None and b != budget:
            raise ApiError(f"model '{plan.model}' names budget {budget} but ttc.budget is {b}", param="ttc.budget")
        budget = b
    tb = t.get("think_budget")
    if tb is not None and (isinstance(tb, bool) or not isinstance(tb, int) or tb < 0):
        raise ApiError(f"'ttc.think_budget' must be a non-negative integer, got {tb!r}", param="ttc.think_budget")
    plan.think_budget = tb
    opts = t.get("opts") or {}
    if not isinstance(opts, dict) or not all(
        isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in opts.values()
    ):
        raise ApiError("'ttc.opts' must map option names to numbers or strings", param="ttc.opts")
    plan.options.update(opts)
    plan.strategy = strategy
    if budget is not None:
        plan.budget = budget


def _content(message: dict, i: int) -> str:
    c = message.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in c):
        return "".join(str(p.get("text", "")) for p in c)
    raise ApiError(f"messages[{i}].content must be text (a string or text parts)", param=f"messages[{i}].content")


def chat_problem(messages: Any) -> str:
    """The problem of a chat: its one user message. ttc answers one problem per request with the preset's own
    prompt, so system messages and earlier turns, which it could not honour, are refused."""
    if not isinstance(messages, list) or not messages:
        raise ApiError("'messages' must be a non-empty list", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            raise ApiError(f"messages[{i}] must be an object with a role", param=f"messages[{i}]")
    if len(messages) != 1 or messages[0]["role"] != "user":
        roles = ", ".join(m["role"] for m in messages)
        raise ApiError(f"ttc serve answers one problem per request: 'messages' must be one user message (got "
                       f"{roles}); the preset's own prompt frames it", param="messages")  # fmt: skip
    text = _content(messages[0], 0)
    if not text.strip():
        raise ApiError("the user message is empty", param="messages[0].content")
    return text


def parse(body: Any, chat: bool, raw_names: set[str], max_budget: int) -> Plan:
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object")
    _refuse_unknown(body, CHAT if chat else COMPLETIONS)
    raw, strategy, budget, options = parse_model(body.get("model"), raw_names)
    if chat:
        if raw:
            raise ApiError(f"model '{body['model']}' is the plain policy: it serves /v1/completions only",
                           param="model")  # fmt: skip
        problems = [chat_problem(body.get("messages"))]
    else:
        p = body.get("prompt")
        problems = [p] if isinstance(p, str) else p
        if not isinstance(problems, list) or not problems or not all(isinstance(x, str) for x in problems):
            raise ApiError("'prompt' must be a string or a non-empty list of strings", param="prompt")
        if len(problems) > MAX_N:
            raise ApiError(f"at most {MAX_N} prompts per request, got {len(problems)}", param="prompt")
        if not raw and not all(x.strip() for x in problems):
            raise ApiError("a prompt is empty", param="prompt")
    plan = Plan(model=body["model"], raw=raw, problems=problems, options=dict(options), chat=chat)
    _ttc_field(body, plan, strategy, budget)
    if not raw:
        from ..errors import UsageError
        from ..solve import check_budget

        try:
            check_budget(plan.budget, "ttc.budget")
        except UsageError as e:
            raise ApiError(str(e), param="ttc.budget") from None
    n = _number(body, "n", 1, MAX_N, integer=True) or 1
    if not raw and n * plan.budget * len(problems) > max_budget:
        raise ApiError(f"n x budget x prompts = {n * plan.budget * len(problems)} is over the limit of {max_budget} "
                       "generation-equivalents per request (TTC_MAX_BUDGET raises it)", param="n")  # fmt: skip
    seed = _number(body, "seed", -(2**63), 2**64 - 1, integer=True)
    seed = secrets.randbelow(2**31) if seed is None else seed
    plan.seeds = [seed + i for i in range(n)]
    plan.temperature = _number(body, "temperature", 0, 2)
    plan.top_p = _number(body, "top_p", 0, 1)
    if plan.top_p == 0:
        raise ApiError("'top_p' must be above 0", param="top_p")
    plan.top_k = _number(body, "top_k", -1, 1 << 20, integer=True)
    tokens_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    plan.max_tokens = _number(body, tokens_key, 1, 1 << 20, integer=True)
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(f"'stop' must be a non-empty string or a list of up to {MAX_STOP} of them", param="stop")
    plan.stop = stop
    ie = body.get("ignore_eos")
    if ie is not None and (not isinstance(ie, bool) or (ie and not raw)):
        raise ApiError("'ignore_eos' is a boolean, for the plain policy's completions only", param="ignore_eos")
    plan.ignore_eos = bool(ie)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError("'stream' must be a boolean", param="stream")
    plan.stream = bool(stream)
    so = body.get("stream_options")
    if so is not None and (not isinstance(so, dict) or set(so) - {"include_usage"}):
        raise ApiError("'stream_options' takes only include_usage", param="stream_options")
    plan.include_usage = bool((so or {}).get("include_usage"))
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise ApiError("'user' must be a string", param="user")
    return plan
