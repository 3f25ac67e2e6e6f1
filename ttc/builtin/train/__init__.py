"""The training recipe of the built-in model pair (needs the `train` extra: torch).

    formats      the text layouts both models are trained on (no torch; the preset must agree)
    model        a llama in torch with llama.cpp's conventions
    data         examples with loss targets, batching
    sample       batched KV-cached generation in torch
    policy       policy training: plain solutions, then revision contexts built from its own wrong attempts
    prm          PRM training on the policy's own samples with exact step labels (Math-Shepherd format)
    export       torch <-> GGUF (through ttc.builtin.gguf_llama)
    evaluate     accuracy helpers; report: the final measurements on the shipped 500 problems

Run `python -m ttc.train --help`.
"""
