"""The one base class of the errors a command reports as one line and an exit code.

Each error class says its own code (from trainer.contract); `trainer.commandline.outcome`
reads it. TensorFlow-free, and it knows nothing of its subclasses: the jobs/ package's
errors derive from it as the trainer's do.
"""

from __future__ import annotations

from typing import ClassVar

from trainer import contract


class KnownError(Exception):
    """An expected failure: its message is the line the user sees, never a traceback.

    `exit_code`: the process's exit code. `resumable`: the trainer stopped at a checkpoint
    and a rerun with the same run id resumes (a Job reruns it; a command a person runs
    reports it as a failure, exit 1). `store_refusal`: a store that exists no more or
    refuses us, whose code each program chooses (bad input for the trainer and predict; the
    jobs.* commands document 1). A subclass sets what differs from its base.
    """

    exit_code: ClassVar[int] = contract.EXIT_BAD_INPUT
    resumable: ClassVar[bool] = False
    store_refusal: ClassVar[bool] = False
