"""The in-process backend: llama.cpp through llama-cpp-python's low-level API.

engine      LlamaEngine: loads a GGUF, tokenizes, samples N streams in one decode per step, scores
            log-probabilities at positions, lends contexts, picks flash attention per context
context     one llama.cpp context (unified KV buffer, up to 256 sequences) and its chunked decodes
branches    step-wise branches in a context (fork, extend to a stop, feed, drop) and the sampling loop
speed       `ttc speed`: the batched sampler against a sequential create_completion loop
flashbench  `python -m ttc.engine.llama.flashbench`: flash attention on and off, per decode shape
"""

from .branches import LlamaBranches
from .context import MAX_SEQ, N_BATCH, _Context
from .engine import FLASH_MIN_TOKENS, LlamaEngine, gpu_layers

__all__ = ["FLASH_MIN_TOKENS", "MAX_SEQ", "N_BATCH", "LlamaBranches", "LlamaEngine", "_Context", "gpu_layers"]
