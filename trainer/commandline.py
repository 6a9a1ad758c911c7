"""What every command line of the project shares: flag names, integers as typed, errors to
exit codes and messages (each error class names its code: contract.KnownError), and
running a fire command.

Used by `python -m trainer`, `trainer.predict`, `trainer.serving`, `bench.parity` and
every `jobs.*` command. TensorFlow-free; fire is imported only to run a command.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Collection, Sequence
from typing import Any

from trainer import contract
from trainer.contract import KnownError

# [0-9], not \d: \d takes any Unicode digit ("٣" would be 3).
_INT = re.compile(r"\s*[+-]?[0-9]+(_[0-9]+)*\s*\Z")


class UsageError(KnownError, ValueError):
    """A command line that names an unknown flag or leaves one without its value."""


def option_name(field: str) -> str:
    """`run_id` -> `run-id`: how a setting is spelled on the command line and in errors."""
    return field.replace("_", "-")


def flag(field: str) -> str:
    """`run_id` -> `--run-id`."""
    return "--" + option_name(field)


def as_int(value: Any) -> int | None:
    """`value` as an integer, whatever a parser made of what was typed (10, "10", 10.0),
    or None when it is not one (a bool, 10.5, "ten", "1e3")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return int(value) if _INT.match(value) else None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    try:
        as_integer = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return as_integer if as_integer == value else None


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def outcome(
    e: BaseException,
    resumable: bool = False,
    store_refused: int = contract.EXIT_BAD_INPUT,
    foreign: Callable[[BaseException], int | None] | None = None,
) -> tuple[int, str] | None:
    """(exit code, line) for a known error (a KnownError, which names its own code), or
    None for an unexpected one.

    `resumable`: the program is the trainer, which a Job reruns to resume (exits 75, 76,
    78). A command a person runs is not resumed: there a store outage or a signal is a
    failure, exit 1. `store_refused`: the exit code of a store that refuses (no such
    bucket, forbidden): bad input for the trainer and prediction; the jobs.* commands
    document 1 ("the cluster or the store refused"). `foreign`: the exit code of an error
    of a dependency that the program knows (the jobs.* commands: the Kubernetes client's),
    or None.
    """
    if isinstance(e, KnownError):
        if e.resumable and not resumable:
            code, word = contract.EXIT_FAILED, "error"
        elif e.resumable:
            code, word = e.exit_code, "stopped, resumable"
        else:
            code, word = store_refused if e.store_refusal else e.exit_code, "error"
    else:
        code = foreign(e) if foreign is not None else None
        if code is None:
            return None
        word = "error"
    message = one_line(e)
    return code, f"{word}: {message}" if message else ""


def _help(component: Any, argv: Sequence[str], name: str) -> bool:
    """Print fire's help for `argv` on stdout, without its INFO line or a pager.

    Returns False when `argv` does not ask for help.
    """
    if not any(a in ("-h", "--help") for a in argv):
        return False
    from fire import helptext
    from fire.trace import FireTrace

    trace = FireTrace(component, name=name)
    if isinstance(component, dict) and argv and argv[0] in component:
        component = component[argv[0]]
        trace.AddAccessedProperty(component, argv[0], [argv[0]], None, None)
    sys.stdout.write(helptext.HelpText(component, trace=trace) + "\n")
    return True


def strings_as_typed(argv: Sequence[str], string_flags: Collection[str]) -> list[str]:
    """argv with every value of `string_flags` quoted as a Python string literal, which fire
    reads back as exactly that string (not `--run-id 0x10` as 16)."""
    out: list[str] = []
    quote_next = False
    for arg in argv:
        if quote_next:
            out.append(repr(arg))
            quote_next = False
            continue
        name, eq, value = arg.partition("=")
        if name in string_flags:
            if eq:
                out.append(f"{name}={value!r}")
            else:
                out.append(arg)
                quote_next = True
            continue
        out.append(arg)
    return out


def split_reviews(fn: Callable, argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(flags for fire, positional arguments): fire would parse a review like "10/10" or
    "(great)" as a Python value, so positional arguments never go through it."""
    names = list(inspect.signature(fn).parameters)
    params = {option_name(n) for n in names} | set(names)
    # fire's short forms: -r for --run where no other flag starts with the same letter.
    firsts = [n[0] for n in names]
    short = {f"-{n[0]}" for n in names if firsts.count(n[0]) == 1}
    flags: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i + 1 :])
            break
        if arg in ("-h", "--help"):
            flags.append(arg)
        elif arg in short:
            if i + 1 >= len(argv):
                raise UsageError(f"flag {arg} needs a value")
            long = next(n for n in names if n[0] == arg[1])
            flags.append(f"--{long}={argv[i + 1]}")
            i += 1
        elif arg.startswith("--") and len(arg) > 2:
            name = arg[2:].split("=", 1)[0]
            if name not in params:
                valid = ", ".join(flag(p) for p in names)
                raise UsageError(f"unknown flag --{name}: expected one of {valid}")
            if "=" not in arg:
                if i + 1 >= len(argv):
                    raise UsageError(f"flag --{name} needs a value")
                # One token: fire reads a lone "-" as its command separator, not a value.
                arg = f"{arg}={argv[i + 1]}"
                i += 1
            flags.append(arg)
        else:
            rest.append(arg)
        i += 1
    return flags, rest


def run_fire(
    component: Any,
    argv: Sequence[str] | None,
    name: str,
    *,
    store_refused: int = contract.EXIT_BAD_INPUT,
    foreign: Callable[[BaseException], int | None] | None = None,
    string_flags: Collection[str] = (),
    positional: Callable[[list[str]], Callable[..., Any]] | None = None,
) -> int:
    """Run a fire command; known errors become one line on stderr and their exit code
    (`outcome`), never a traceback.

    With `positional`, `positional(args)` makes the command from the positional arguments,
    which are passed as they are, not parsed by fire.
    """
    import fire

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if positional is not None:
            flags, rest = split_reviews(positional([]), argv)
            command = positional(rest)
        else:
            flags, command = argv, component
        if _help(command, flags, name):
            return contract.EXIT_OK
        fire.Fire(command, command=strings_as_typed(flags, string_flags), name=name)
    except fire.core.FireExit as e:  # fire's usage errors
        return int(e.code or 0)
    except KeyboardInterrupt:
        return contract.EXIT_INTERRUPTED
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return contract.EXIT_OK
    except Exception as e:
        known = outcome(e, store_refused=store_refused, foreign=foreign)
        if known is None:
            raise
        code, line = known
        if line:
            print(line, file=sys.stderr)
        return code
    return contract.EXIT_OK
