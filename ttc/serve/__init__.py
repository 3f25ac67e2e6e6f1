"""`ttc serve`: the OpenAI API in front of the Solver, an entry point beside ttc.cli (nothing below imports it).

    protocol    reading requests: model names (ttc/STRATEGY@BUDGET), OpenAI fields honoured or refused by name
    responses   chat / text completions, streamed chunks, usage and ttc's accounting
    service     the Solver with its engines behind the request scheduler, and the threads that run requests
    app         the Starlette app: routes, API key, caps, errors, SSE, cancelling a client that went away

Cross-request batching is the engine layer's (ttc.engine.scheduler), not the handlers'.
"""
