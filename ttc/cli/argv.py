"""Arguments that start with a minus sign: `ttc grade -50 -50.0` and `ttc solve -3+5` are everyday inputs for
a tool whose answers are numbers, but a parser reads `-5` as a cluster of short options.

`protect_negative_arguments` rewrites such a command line before the parser sees it: when a positional
argument looks like a negative number or an expression (`-50`, `-.5`, `-3+5`, `-(2+3)`), every positional
argument moves behind a `--`, in the order given, and the options stay in front. Which tokens are option
values is read from the command's own parameters, so `--budget 4 -3+5` keeps 4 with --budget. A command line
that already holds `--` is left alone.
"""

from __future__ import annotations

import re

NEGATIVE = re.compile(r"-(\d|\.\d|\()")


def looks_negative(token: str) -> bool:
    return bool(NEGATIVE.match(token))


def protect_negative_arguments(group, argv: list[str]) -> list[str]:
    """argv (without the program name) with positional arguments behind `--` when one of them starts with a
    minus sign that begins a number or an expression; unchanged otherwise. `group` is the click group."""
    if "--" in argv or not any(looks_negative(t) for t in argv):
        return argv
    # the subcommand: the first token that names a command (group options before it take no values here)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1
    if i >= len(argv) or argv[i] not in getattr(group, "commands", {}):
        return argv
    head, command, rest = argv[:i], group.commands[argv[i]], argv[i + 1 :]
    if hasattr(command, "commands"):  # a sub-group (ttc presets ...): recurse into it
        return head + [argv[i]] + protect_negative_arguments(command, rest)
    takes_value: set[str] = set()
    known: set[str] = set()
    for p in command.params:
        names = list(getattr(p, "opts", [])) + list(getattr(p, "secondary_opts", []))
        if getattr(p, "param_type_name", "") != "option":
            continue
        known.update(names)
        if not getattr(p, "is_flag", False) and not getattr(p, "count", False):
            takes_value.update(getattr(p, "opts", []))
    options: list[str] = []
    positionals: list[str] = []
    j = 0
    while j < len(rest):
        t = rest[j]
        name = t.split("=", 1)[0]
        if t.startswith("-") and not looks_negative(t) and (name in known or t.startswith("--") or len(t) == 2):
            options.append(t)
            if name in takes_value and "=" not in t and j + 1 < len(rest):
                options.append(rest[j + 1])
                j += 1
        else:
            positionals.append(t)
        j += 1
    if not any(looks_negative(t) for t in positionals):
        return argv
    return head + [argv[i]] + options + ["--"] + positionals
