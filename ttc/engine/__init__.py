"""The engines: turn token sequences into continuations, scores and counts; they know no strategy, PRM or
prompt.

    base     the interface every backend implements (Engine, BranchSet), sampling parameters, completions,
             usage counters, the per-sample seed rule
    models   model references (a path, hf://owner/repo/file.gguf, builtin:NAME) and GGUF checks
    llama/   in-process llama.cpp through llama-cpp-python
    openai/  an OpenAI-compatible server over HTTP (vLLM, SGLang, llama-server)

Nothing is imported here, so `import ttc.engine.base` never loads llama.cpp or httpx.
"""
