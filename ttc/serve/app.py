"""The ASGI app of `ttc serve` (Starlette): routes, the API key, request caps, errors in OpenAI's shape,
streaming, and cancelling the work of a client that went away.

    POST /v1/chat/completions   the user message is the problem; the answer is a strategy run
    POST /v1/completions        each prompt is a problem; or, for the model named after the policy, plain text
    GET  /v1/models             ttc, ttc/STRATEGY for every strategy, and the policy itself
    GET  /health                {"status": "ok"} and what the scheduler holds now
    POST /tokenize, /detokenize the policy's tokenizer (what `ttc solve --backend openai` asks of a server)

Every failure is `{"error": {"message", "type", "param", "code"}}` with its status (400 bad field, 401 key,
404 model or path, 405 method, 413 too large, 500 the server's fault); the server keeps serving after each.
The strategy runs in a worker thread; a client that disconnects while it runs has its runs cancelled
(ttc.engine.scheduler: its sequences stop and leave the KV cache).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
import threading
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..engine.scheduler import Cancelled
from ..errors import TTCError, UsageError
from . import responses
from .protocol import ApiError, parse

MAX_REQUEST_BYTES = 1 << 20  # a request body past this is refused (413)
KEEPALIVE_S = 0.5  # a streamed answer sends an SSE comment this often while the strategy runs


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


async def read_json(request: Request, limit: int):
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise ApiError(f"the request body is {size} bytes, over the limit of {limit}", 413, code="request_too_large")
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > limit:
            raise ApiError(f"the request body is over the limit of {limit} bytes", 413, code="request_too_large")
    try:
        return json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(f"the request body is not valid JSON ({e})", code="invalid_json") from None


async def _disconnected(receive) -> None:
    """Returns when the client has gone away (the body has been read, so the next message is the disconnect)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


def build_app(service, api_key: str | None = None, max_request_bytes: int = MAX_REQUEST_BYTES, log=None) -> Starlette:
    log = log or (lambda msg: print(f"ttc serve: {msg}", file=sys.stderr, flush=True))
    raw_names = {service.raw_name}

    def authorised(request: Request) -> None:
        if api_key is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, token = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError("a valid API key is required: Authorization: Bearer KEY", 401, code="invalid_api_key")

    async def completion(request: Request, chat: bool) -> Response:
        authorised(request)
        body = await read_json(request, max_request_bytes)
        plan = parse(body, chat, raw_names, service.max_budget)
        service.check(plan)
        rid = responses.new_id(chat)
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        future = asyncio.wrap_future(service.pool.submit(service.answer, plan, cancel.is_set))
        if plan.stream:
            return StreamingResponse(_stream(future, cancel, plan, rid, chat, started), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
        watcher = loop.create_task(_disconnected(request.receive))
        try:
            await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                cancel.set()
                log(f"{rid}: the client went away; its runs are cancelled")
                try:
                    await future
                except Exception:
                    pass
                return Response(status_code=499)
        finally:
            watcher.cancel()
        choices = _result(future)
        log(f"{rid}: {plan.model} answered in {time.perf_counter() - started:.2f}s")
        return JSONResponse(responses.body(chat, rid, plan.model, choices))

    async def _stream(future, cancel, plan, rid, chat, started):
        try:
            while not future.done():
                done, _ = await asyncio.wait({future}, timeout=KEEPALIVE_S)
                if not done:
                    yield f": ttc: {plan.model} running, {time.perf_counter() - started:.1f}s\n\n".encode()
            try:
                choices = _result(future)
            except ApiError as e:
                yield responses.sse(e.body())
                yield responses.sse("[DONE]")
                return
            for chunk in responses.chunks(chat, rid, plan.model, choices, plan.include_usage):
                yield responses.sse(chunk)
            yield responses.sse("[DONE]")
            log(f"{rid}: {plan.model} streamed in {time.perf_counter() - started:.2f}s")
        finally:
            if not future.done():  # the client went away mid-stream
                cancel.set()
                log(f"{rid}: the client went away; its runs are cancelled")

    def _result(future):
        try:
            return future.result()
        except ApiError:
            raise
        except Cancelled:
            raise ApiError("the request was cancelled", 499, code="cancelled") from None
        except UsageError as e:
            raise ApiError(str(e)) from None
        except TTCError as e:
            raise ApiError(str(e), 500, kind="server_error") from None
        except Exception as e:
            log(f"internal error: {type(e).__name__}: {e}")
            raise ApiError(f"internal error: {type(e).__name__}: {e}", 500, kind="server_error") from None

    async def chat_completions(request: Request) -> Response:
        return await completion(request, True)

    async def completions(request: Request) -> Response:
        return await completion(request, False)

    async def models(request: Request) -> Response:
        authorised(request)
        return JSONResponse({"object": "list", "data": service.models()})

    async def health(request: Request) -> Response:
        authorised(request)
        state = await asyncio.get_running_loop().run_in_executor(None, service.state)
        return JSONResponse({"status": "ok", **state})

    async def tokenize(request: Request) -> Response:
        authorised(request)
        body = await read_json(request, max_request_bytes)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            raise ApiError("'prompt' (a string) is required", param="prompt")
        add = body.get("add_special_tokens", True)
        if len(body["prompt"]) > service.max_prompt_chars:
            raise ApiError(f"'prompt' is over {service.max_prompt_chars} characters", param="prompt")
        tok = service.solver.policy.tokenize
        ids = await asyncio.get_running_loop().run_in_executor(service.pool, tok, body["prompt"], bool(add), True)
        return JSONResponse({"tokens": ids, "count": len(ids), "max_model_len": service.solver.policy.info.n_ctx_train})

    async def detokenize(request: Request) -> Response:
        authorised(request)
        body = await read_json(request, max_request_bytes)
        toks = body.get("tokens") if isinstance(body, dict) else None
        n_vocab = service.solver.policy.n_vocab
        if not isinstance(toks, list) or not all(isinstance(t, int) and 0 <= t < n_vocab for t in toks):
            raise ApiError(f"'tokens' must be a list of token ids in [0, {n_vocab})", param="tokens")
        return JSONResponse({"prompt": service.solver.policy.detokenize(toks)})

    async def on_api_error(request: Request, e: ApiError) -> Response:
        return error_response(e)

    async def on_http_error(request: Request, e: HTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "invalid_request_error")
        return error_response(ApiError(f"{request.method} {request.url.path}: {e.detail}", e.status_code, code=kind))

    async def on_error(request: Request, e: Exception) -> Response:
        log(f"internal error: {type(e).__name__}: {e}")
        return error_response(ApiError(f"internal error: {type(e).__name__}", 500, kind="server_error"))

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/detokenize", detokenize, methods=["POST"]),
    ]
    handlers = {ApiError: on_api_error, HTTPException: on_http_error, Exception: on_error}
    return Starlette(routes=routes, exception_handlers=handlers)
