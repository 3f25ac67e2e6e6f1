"""The built-in model pair: a tiny policy and PRM trained here on arithmetic, so ttc answers offline.

    arith       the task: problems like `37+48-19`, their exact step-by-step solutions, the held-out set
    train       the training recipe (torch; `python -m ttc.train`), export to GGUF, the report
    gguf_llama  writing small llama GGUF files with the `gguf` package (the built-in pair, test models)

The shipped files themselves stay where the documented commands name them: the models in `ttc/models/`
(`builtin:NAME`) and the 500 held-out problems in `ttc/data/arith500.jsonl`.
"""
