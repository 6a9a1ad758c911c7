"""SIGTERM/SIGINT -> a flag the run checks, and a stop request to the model being fitted."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

from trainer import contract
from trainer.contract import KnownError


class DivergedError(KnownError):
    """The training loss became NaN or infinite: the run stops before checkpointing it."""

    exit_code = contract.EXIT_DIVERGED


class RetryableError(KnownError):
    """The run stopped at its last checkpoint and resumes when started again (exit 75)."""

    exit_code, resumable = contract.EXIT_PREEMPTED, True


class PreemptedError(RetryableError):
    """SIGTERM arrived: the run stopped at a checkpoint and can be resumed."""


class GroupStoppedError(RetryableError):
    """Another worker of the group was signalled and the group stopped together at a
    checkpoint; this worker was not (exit 76, not counted by the Job)."""

    exit_code = contract.EXIT_GROUP_STOPPED


class Termination:
    """Turns SIGTERM/SIGINT into a flag plus a stop request to the running model.

    Installed before the data is read, so a pod stopped while it encodes exits 75 like one
    stopped mid-epoch (PID 1 ignores SIGTERM unless a handler is installed). The handler sets
    `model.stop_training` itself, so no per-batch callback is needed: a batch hook would turn
    off Keras's asynchronous callback dispatch and cost every step.

    In a worker group a signal only raises this worker's flag: the group agrees when to stop
    (callbacks.GroupStop), because a worker that left alone would leave its peers waiting in
    the next collective until the collective timeout. `stopping` is what the run acts on.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self.model = None  # the model whose fit() should stop (one process only)
        self.group = False  # a worker group: the stop is agreed, not taken alone
        self.agreed = False  # the group agreed to stop (some worker was signalled)
        self._hint: str | None = None  # set while a signal should stop the run at once

    def install(self) -> Termination:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._handle)
        return self

    @contextlib.contextmanager
    def stop_at_once(self, hint: str):
        """Inside, a signal raises PreemptedError at once: there is nothing to checkpoint yet
        (reading and encoding the data), so the pod need not wait for it to finish."""
        if self.requested:
            raise PreemptedError(f"stopped by signal {self.signum} before training; {hint}")
        self._hint = hint
        try:
            yield
        finally:
            self._hint = None

    def _handle(self, signum, frame) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        self.event.set()
        if self._hint:
            hint, self._hint = self._hint, None
            raise PreemptedError(f"stopped by signal {signum} while loading data; {hint}")
        if self.model is not None and not self.group:
            self.model.stop_training = True
        print(
            f"received {signal.Signals(signum).name}: stopping at the next checkpoint",
            file=sys.stderr,
            flush=True,
        )

    @property
    def requested(self) -> bool:
        """This process was signalled."""
        return self.event.is_set()

    @property
    def stopping(self) -> bool:
        """The run stops: its own signal, or in a worker group the group's agreement."""
        return self.agreed if self.group else self.requested

    def why(self) -> str:
        """What stopped the run, for its last line."""
        if self.requested:
            return f"signal {self.signum}"
        return "the worker group (another worker was signalled)"
