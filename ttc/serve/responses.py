"""The shapes `ttc serve` answers in: OpenAI's chat completion, text completion and their streamed chunks,
built from the strategy runs' result records (or a plain completion's), with ttc's accounting beside them.

The assistant message is the chosen solution: the best-scored candidate whose answer is the result's answer
(the first such one without scores). A thinking model's thinking goes in `reasoning_content`, as
llama-server and vLLM return it, never in `content`. `usage` counts every token spent: prompt tokens are the
policy's evaluated prompt tokens plus the PRM's, completion tokens every token sampled in every run; the
`ttc` field carries each run's full result record and the spend summed over the runs.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .. import __version__

FINGERPRINT = f"ttc-{__version__}"


@dataclass
class Choice:
    text: str
    finish_reason: str  # stop | length
    reasoning: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    record: dict[str, Any] | None = None  # the strategy's result record
    stop_reason: str | None = None  # plain completions: the stop string that ended it (vLLM's field)
    extra: dict[str, Any] = field(default_factory=dict)


def chosen(result) -> tuple[str, str, str | None]:
    """(text, finish_reason, thinking) of the solution a result chose."""
    cands = [c for c in result.candidates if c.answer == result.answer] or list(result.candidates)
    if not cands:
        return "", "stop", None
    best = max(cands, key=lambda c: float("-inf") if c.score is None else c.score)
    reason = "length" if best.finish_reason == "length" else "stop"
    return best.text, reason, getattr(best, "thinking", None)


def from_result(result, stops: list[str]) -> Choice:
    """A choice from one strategy run; `stops` cut the returned text at the first of them, as OpenAI does."""
    text, reason, thinking = chosen(result)
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut >= 0:
        text, reason = text[:cut], "stop"
    s = result.spent
    return Choice(text, reason, thinking, s.prompt_tokens + s.prm_tokens, s.tokens_generated, result.to_dict())


def usage(choices: list[Choice]) -> dict[str, int]:
    p = sum(c.prompt_tokens for c in choices)
    g = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": p, "completion_tokens": g, "total_tokens": p + g}


def accounting(choices: list[Choice]) -> dict[str, Any] | None:
    records = [c.record for c in choices if c.record is not None]
    if not records:
        return None
    keys = ("generations", "tokens_generated", "prompt_tokens", "prm_tokens", "decode_calls", "wall_s", "flops")
    spent = {k: sum(r["spent"][k] for r in records) for k in keys}
    spent["wall_s"] = round(spent["wall_s"], 4)
    return {"spent": spent, "results": records}


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def body(chat: bool, rid: str, model: str, choices: list[Choice]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
        "model": model, "system_fingerprint": FINGERPRINT, "choices": [], "usage": usage(choices),
    }  # fmt: skip
    for i, c in enumerate(choices):
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": c.text}
            if c.reasoning is not None:
                message["reasoning_content"] = c.reasoning
            item = {"index": i, "message": message, "logprobs": None, "finish_reason": c.finish_reason}
        else:
            item = {"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
            if c.record is None:
                item["stop_reason"] = c.stop_reason
        out["choices"].append(item)
    ttc = accounting(choices)
    if ttc is not None:
        out["ttc"] = ttc
    return out


def chunks(chat: bool, rid: str, model: str, choices: list[Choice], include_usage: bool) -> list[dict[str, Any]]:
    """The streamed form of an answer: per choice, its role (chat), its text (reasoning first), its finish;
    then, when asked, a last chunk with no choices and the usage; ttc's accounting rides on the last chunk."""
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": rid, "object": kind, "created": created, "model": model, "system_fingerprint": FINGERPRINT,
                "choices": items}  # fmt: skip

    out = []
    for i, c in enumerate(choices):
        if chat:
            out.append(chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
            if c.reasoning is not None:
                out.append(chunk([{"index": i, "delta": {"reasoning_content": c.reasoning}, "finish_reason": None}]))
            out.append(chunk([{"index": i, "delta": {"content": c.text}, "finish_reason": None}]))
            out.append(chunk([{"index": i, "delta": {}, "finish_reason": c.finish_reason}]))
        else:
            out.append(chunk([{"index": i, "text": c.text, "logprobs": None, "finish_reason": None}]))
            out.append(chunk([{"index": i, "text": "", "logprobs": None, "finish_reason": c.finish_reason}]))
    if include_usage:
        out.append({**chunk([]), "usage": usage(choices)})
    ttc = accounting(choices)
    if ttc is not None and out:
        out[-1]["ttc"] = ttc
    return out


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()
