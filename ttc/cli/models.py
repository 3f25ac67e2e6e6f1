"""`ttc strategies` and `ttc presets list|show`: what can be run, and with which models and prompts."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import app

presets_app = typer.Typer(help="List and show presets (model + PRM + prompt format + policy).", no_args_is_help=True)
app.add_typer(presets_app, name="presets")


@app.command("strategies")
def strategies_cmd() -> None:
    """List the strategies."""
    from ..strategies import REGISTRY

    for spec in REGISTRY.values():
        print(f"{spec.name}\t{spec.summary}")


@presets_app.command("list")
def presets_list() -> None:
    """Names and descriptions of the presets found."""
    from ..presets import list_presets, load_preset

    for name in list_presets():
        print(f"{name}\t{load_preset(name).description}")


@presets_app.command("show")
def presets_show(name: Annotated[str, typer.Argument(help="Preset name or YAML path.")]) -> None:
    """The preset, validated, with defaults filled in (YAML on stdout)."""
    import yaml

    from ..presets import load_preset, preset_to_dict

    p = load_preset(name)
    print(f"# {p.source}")
    print(yaml.safe_dump(preset_to_dict(p), sort_keys=False, allow_unicode=True), end="")
