"""The exceptions that the command line turns into one-line messages and exit codes.

Anything the user can fix by changing arguments, flags or files they named is a UsageError (exit 2);
anything that went wrong while running is a TTCRuntimeError (exit 1). Other exceptions are bugs and
show a traceback only with TTC_DEBUG=1.
"""


class TTCError(Exception):
    """Base class: a message meant for the user, one line, and the exit code to leave with."""

    exit_code = 1


class UsageError(TTCError):
    """Bad arguments, flags, presets or input files: exit 2."""

    exit_code = 2


class TTCRuntimeError(TTCError):
    """A failure while running (a model that will not load, a server that went away): exit 1."""

    exit_code = 1
