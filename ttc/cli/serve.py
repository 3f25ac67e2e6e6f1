"""`ttc serve`: an OpenAI-compatible endpoint whose every answer is a strategy run within a budget.

The ASGI stack (Starlette, uvicorn: `pip install 'ttc[serve]'`) is imported only here, when the command
runs, so `ttc --help` stays fast.
"""

from __future__ import annotations

import ipaddress
import os
import signal
from typing import Annotated

import typer

from ..errors import UsageError
from .app import app, err
from .options import (
    BackendOpt,
    BaseUrlOpt,
    GpuOpt,
    ModelOpt,
    PresetOpt,
    PrmBaseUrlOpt,
    ServedModelOpt,
    ThreadsOpt,
    VerboseOpt,
)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command(
    epilog="Examples:\n\n  ttc serve --port 8080\n\n  curl -s http://127.0.0.1:8080/v1/chat/completions -H "
    '\'Content-Type: application/json\' -d \'{"model": "ttc/majority@8", "messages": [{"role": "user", '
    '"content": "37+48-19"}]}\'\n\n  TTC_API_KEY=secret ttc serve --host 0.0.0.0'
)
def serve(
    preset: PresetOpt = None,
    model: ModelOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind (default: loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="TTC_API_KEY", show_envvar=True, help="Require Authorization: Bearer KEY."),
    ] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Strategy runs at once (more wait their turn).")] = 32,
    max_request_bytes: Annotated[int, typer.Option("--max-request-bytes", help="Largest request body.")] = 1 << 20,
    n_gpu_layers: GpuOpt = None,
    threads: ThreadsOpt = None,
    backend: BackendOpt = None,
    base_url: BaseUrlOpt = None,
    prm_base_url: PrmBaseUrlOpt = None,
    served_model: ServedModelOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Serve the OpenAI API (chat, completions, models): every answer is a ttc strategy run within a budget.
    The model name picks the strategy and budget (ttc/weighted-best-of-n@16, ttc/auto@8, ttc/greedy; plain
    ttc: the preset's); the policy's own name gives plain completions."""
    try:
        import uvicorn

        from ..serve.app import build_app
        from ..serve.service import Service
    except ImportError as e:
        raise UsageError(f"ttc serve needs the serve extra ({e}): pip install 'ttc[serve]'") from None
    from ..solve import ModelOptions

    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be in [1, 65535], got {port}")
    if parallel < 1 or max_request_bytes < 1024:
        raise UsageError("--parallel must be at least 1 and --max-request-bytes at least 1024")
    key = (api_key or "").strip() or None
    if not _loopback(host) and key is None:
        err.print(
            f"ttc serve: warning: binding {host} without an API key: anyone who can reach this port can spend its "
            "compute (--api-key KEY or TTC_API_KEY sets one)",
            markup=False,
        )
    models = ModelOptions(
        preset, model, n_gpu_layers, threads, verbose, backend, base_url, served_model, prm_base_url=prm_base_url
    )
    service = Service(models, parallel=parallel)
    try:
        config = uvicorn.Config(
            build_app(service, key, max_request_bytes), host=host, port=port, log_level="warning",
            timeout_graceful_shutdown=int(os.environ.get("TTC_SERVE_SHUTDOWN_S", "60")), access_log=False,
        )  # fmt: skip
        server = uvicorn.Server(config)
        shown = f"[{host}]" if ":" in host else host
        err.print(
            f"ttc serve: {service.solver.preset.name} ({service.raw_name}) on http://{shown}:{port}/v1"
            f"{' (API key required)' if key else ''}; models: ttc, ttc/STRATEGY[@BUDGET], {service.raw_name}",
            markup=False,
            soft_wrap=True,
        )
        # uvicorn finishes the requests under way on SIGTERM, then raises the signal again with the handler it
        # found: a quiet one here, so that the models are closed below and the exit status is 0
        previous = signal.signal(signal.SIGTERM, lambda *_: None)
        try:
            server.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
        err.print("ttc serve: stopped", markup=False)
    finally:
        service.close()
