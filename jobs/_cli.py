"""The jobs.* commands' part of the command line: which flags are strings, their own error,
the Kubernetes client's errors, and their entry points. Running fire: trainer.commandline."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from trainer import commandline, contract
from trainer.contract import KnownError

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


# The short flags every jobs command shares, each always meaning the same option. fire
# would take `-n` as any option starting with n (submit has namespace, name and
# node_selector, and refuses it as ambiguous); spelling them out here makes `-n ml` the
# namespace in submit, status, logs and cancel alike.
SHORT_FLAGS = {"-n": "--namespace"}


def expand_short_flags(argv: Sequence[str]) -> list[str]:
    """`-n ml` and `-n=ml` -> `--namespace ml`, `--namespace=ml`; other arguments as given."""
    out = []
    for arg in argv:
        short, eq, value = arg.partition("=")
        out.append(SHORT_FLAGS[short] + eq + value if short in SHORT_FLAGS else arg)
    return out


class CommandFailedError(KnownError):
    """The command ran but its outcome is a failure (message already printed or given)."""

    exit_code = contract.EXIT_FAILED


def progress(line: str) -> None:
    """A waiting command's progress line: on stderr, as it comes (stdout has the results)."""
    print(line, file=sys.stderr, flush=True)


def client_error(e: BaseException) -> int | None:
    """The exit code of an error of the Kubernetes client, or None for another error.

    Its classes are looked up only where the client is loaded (jobs.results and --help
    never load it): an error of a module never imported was never raised.
    """
    # The client's models refusing a value we built from the flags (answers are wrapped by
    # jobs.kube.CheckedApiClient): bad input, never a traceback.
    validation = getattr(sys.modules.get("pydantic_core"), "ValidationError", None)
    if validation is not None and isinstance(e, validation):
        return contract.EXIT_BAD_INPUT
    # Any other error of the client (ApiTypeError, ApiValueError, an ApiException a call
    # site did not translate): the command failed, one line.
    exceptions = sys.modules.get("kubernetes.client.exceptions")
    if exceptions is not None and isinstance(e, exceptions.OpenApiException):
        return contract.EXIT_FAILED
    return None


def entrypoint(component: Callable[..., Any] | dict[str, Any], name: str) -> Callable[..., int]:
    def main(argv: Sequence[str] | None = None) -> int:
        argv = expand_short_flags(sys.argv[1:] if argv is None else argv)
        return commandline.run_fire(
            component,
            argv,
            name,
            store_refused=contract.EXIT_FAILED,
            foreign=client_error,
            string_flags=STRING_FLAGS,
        )

    return main
