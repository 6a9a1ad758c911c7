"""Shared CLI plumbing: run a fire command, turn known errors into one line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import fire

from trainer.contract import EXIT_BAD_INPUT, EXIT_OK

EXIT_FAILED = 1  # the cluster or store refused, or a watched Job failed

# Flags whose values are names, ids, paths or URIs: strings exactly as typed, never numbers
# (fire would read `--run-id 0x10` as 16 and `--run-id 1e3` as 1000.0).
_STRING_NAMES = (
    "run-id", "name", "namespace", "queue", "service-account", "model", "image", "output",
    "data", "accelerator", "context", "kubeconfig", "dest", "word", "runtime",
    "priority-class-name", "kueue-priority-class", "image-pull-policy", "image-pull-secrets",
)  # fmt: skip
STRING_FLAGS = frozenset(
    f"--{spelling}" for n in _STRING_NAMES for spelling in (n, n.replace("-", "_"))
)


class CommandFailedError(Exception):
    """The command ran but its outcome is a failure (message already printed or given)."""


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


def strings_as_typed(argv: Sequence[str]) -> list[str]:
    """argv with every STRING_FLAGS value quoted as a Python string literal, which fire
    reads back as exactly that string."""
    out: list[str] = []
    quote_next = False
    for arg in argv:
        if quote_next:
            out.append(repr(arg))
            quote_next = False
            continue
        flag, eq, value = arg.partition("=")
        if flag in STRING_FLAGS:
            if eq:
                out.append(f"{flag}={value!r}")
            else:
                out.append(arg)
                quote_next = True
            continue
        out.append(arg)
    return out


def run(component: Any, argv: Sequence[str] | None, name: str) -> int:
    """Run a fire component; errors become `error: ...` on stderr, never a traceback."""
    from jobs.cluster import ClusterError
    from jobs.spec import SpecError
    from trainer.storage import StoreError

    argv = list(argv) if argv is not None else sys.argv[1:]
    if _help(component, argv, name):
        return EXIT_OK
    argv = strings_as_typed(argv)
    try:
        fire.Fire(component, command=argv, name=name)
    except fire.core.FireExit as e:
        return int(e.code or 0)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ClusterError, StoreError, CommandFailedError) as e:
        if str(e):
            print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


def entrypoint(component: Callable[..., Any] | dict[str, Any], name: str) -> Callable[..., int]:
    def main(argv: Sequence[str] | None = None) -> int:
        return run(component, argv, name)

    return main
