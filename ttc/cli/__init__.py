"""The `ttc` command line (Typer): thin commands that parse, call one function and print.

    app       the Typer app, the error boundary and `main` (the `ttc` script's entry point)
    options   the shared Annotated options and the parsers of list and key=value flags
    solve     ttc solve, ttc compare (and the side-by-side table), ttc grade
    policy    ttc difficulty, ttc calibrate (the compute-optimal policy)
    bench     ttc bench
    models    ttc speed, ttc strategies, ttc presets list|show
"""

from .app import app, main

__all__ = ["app", "main"]
