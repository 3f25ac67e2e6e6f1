"""`ttc prm import`: a Hugging Face reward-head PRM (Skywork-o1-Open-PRM, Qwen2.5-Math-PRM; Qwen2, Qwen3 or Llama
backbone) as a GGUF backbone for llama.cpp plus its head, with a preset fragment that names both."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import app, err

prm_app = typer.Typer(help="Reward models: import a Hugging Face PRM with a reward head.", no_args_is_help=True)
app.add_typer(prm_app, name="prm")


@prm_app.command("import")
def prm_import(
    source: Annotated[str, typer.Argument(help="A local Hugging Face checkpoint folder, or hf://owner/repo.")],
    out: Annotated[str, typer.Option("--out", help="Folder to write model.gguf, head.npz and prm.yaml into.")],
    type_: Annotated[str, typer.Option("--type", help="Backbone weights: f16 (default), f32 or q8_0.")] = "f16",
) -> None:
    """Write the backbone GGUF, the head and a prm: preset fragment; print the fragment's path (stdout) and one
    line saying what was read from the checkpoint (stderr), so that a wrong read shows.

    Example: ttc prm import hf://Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B --out ~/.cache/ttc/skywork-prm-1.5b
    """
    from ..prm.hf_import import import_checkpoint

    fragment = import_checkpoint(
        source, out, type_, report=lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True)
    )
    print(fragment)
