"""Shared CLI plumbing: run a fire command, turn known errors into one line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import fire

EXIT_OK = 0
EXIT_FAILED = 1  # the cluster or store refused, or a watched Job failed
EXIT_BAD_INPUT = 2  # the arguments are wrong; nothing was sent


class CommandFailedError(Exception):
    """The command ran but its outcome is a failure (message already printed or given)."""


def run(component: Any, argv: Sequence[str] | None, name: str) -> int:
    """Run a fire component; errors become `error: ...` on stderr, never a traceback."""
    from jobs.cluster import ClusterError
    from trainer.storage import StoreError

    try:
        fire.Fire(component, command=list(argv) if argv is not None else None, name=name)
    except fire.core.FireExit as e:
        return int(e.code or 0)
    except ValueError as e:
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
        return run(component, argv if argv is not None else sys.argv[1:], name)

    return main
