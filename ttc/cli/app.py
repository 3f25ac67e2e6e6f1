"""The `ttc` Typer app and its one error boundary.

stdout carries data (answers, or JSON with --json); everything for people goes to stderr. `main` turns
known failures into a one-line message and an exit code: 2 for usage, 1 for runtime; TTC_DEBUG=1 shows the
traceback. The commands register themselves on `app` from the modules beside this one (ttc.cli imports
them in the order `ttc --help` lists them).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from .. import __version__
from ..errors import TTCError
from .argv import protect_negative_arguments

app = typer.Typer(
    name="ttc",
    help="Budgeted reasoning: spend a fixed amount of inference compute on a problem for a better answer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Piped or logged stderr gets a wide console, so tables keep their columns on one line.
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


def _version(value: bool) -> None:
    if value:
        print(f"ttc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """ttc: turn a compute budget into accuracy (Snell et al. 2024) on llama.cpp."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app behind one error boundary."""
    debug = os.environ.get("TTC_DEBUG") == "1"
    command = typer.main.get_command(app)
    try:
        args = protect_negative_arguments(command, list(sys.argv[1:] if argv is None else argv))
        rv = command.main(args=args, prog_name="ttc", standalone_mode=False)
        return rv if isinstance(rv, int) else 0  # without standalone mode an Exit's code is returned
    except TTCError as e:
        if debug:
            raise
        err.print(f"ttc: error: {e}", markup=False, highlight=False, soft_wrap=True)
        return e.exit_code
    except (typer.Exit, typer.Abort, KeyboardInterrupt, Exception) as e:
        code = _parser_exit(e, debug)
        if code is None:
            raise
        return code


def _parser_exit(e: BaseException, debug: bool) -> int | None:
    """Exit code for exceptions from Typer's parser (click's, or the copy newer Typer vendors) and for
    anything unexpected; None to re-raise (TTC_DEBUG=1)."""
    if isinstance(e, KeyboardInterrupt) or type(e).__name__ == "Abort":
        err.print("ttc: interrupted")
        return 130
    if type(e).__name__ == "Exit":
        return int(getattr(e, "exit_code", 0) or 0)
    if isinstance(e, BrokenPipeError):
        return 0
    if debug:
        return None
    if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # a usage error from the parser
        if type(e).__name__ == "NoArgsIsHelpError" and getattr(e, "ctx", None) is not None:
            err.print(e.ctx.get_help(), markup=False, highlight=False)
            return 2
        ctx = getattr(e, "ctx", None)
        where = f" ({ctx.command_path})" if ctx is not None else ""
        msg = " ".join(e.format_message().split())
        err.print(f"ttc: error{where}: {msg}", markup=False, highlight=False, soft_wrap=True)
        return int(e.exit_code)
    err.print(f"ttc: internal error: {type(e).__name__}: {e} (TTC_DEBUG=1 shows the traceback)", markup=False)
    return 1
