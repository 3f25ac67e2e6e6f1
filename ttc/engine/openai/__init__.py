"""The HTTP backend: the same engine interface over an OpenAI-compatible server (vLLM, SGLang,
llama-server, llama-cpp-python's server).

    engine      OpenAIEngine: sampling, step-wise branches and PRM log-probabilities through /v1/completions
    http        ServerClient: requests with retries and backoff, the key kept out of logs; response readers
    scoring     PRM log-probabilities at step positions (logprobs + logit_bias), mixed into the engine
    stream      streamed samples with approximate TokenStats from top-k log-probs; a Watch closes a stream
    setup       which model on which server, a remote model's facts, local copies for chat templates
    branches    branches held on the client as text and token pieces (the server's prefix cache shares them)
"""

from .engine import OpenAIEngine

__all__ = ["OpenAIEngine"]
