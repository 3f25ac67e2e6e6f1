"""The `ttc` command line (Typer): thin commands that parse, call one function and print.

    app       the Typer app, the error boundary and `main` (the `ttc` script's entry point)
    options   the shared Annotated options; parsers of list, key=value and stdin arguments
    solve     ttc solve, ttc compare (with the side-by-side table)
    policy    ttc difficulty, ttc calibrate (the compute-optimal policy)
    grade     ttc grade
    bench     ttc speed, ttc bench
    models    ttc strategies, ttc presets list|show
    prm       ttc prm import (a Hugging Face reward-head PRM as GGUF + head)
    serve     ttc serve (an OpenAI-compatible endpoint; the ASGI app is ttc.serve)

Each command module registers its commands on `app` when imported; they are imported here in the order
`ttc --help` lists them. Command modules import `app` and `options`, never each other.
"""

from .app import app, main

# isort: off
from . import solve  # noqa: F401, E402  (each registers its commands, in this order)
from . import policy  # noqa: F401, E402
from . import grade  # noqa: F401, E402
from . import bench  # noqa: F401, E402
from . import models  # noqa: F401, E402
from . import prm  # noqa: F401, E402
from . import serve  # noqa: F401, E402
# isort: on

__all__ = ["app", "main"]
