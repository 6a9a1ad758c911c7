"""Container entrypoint and local CLI: `python -m trainer --model lstm --data ... --output ...`."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from trainer import contract, phases  # noqa: F401 (first: its import time is the start mark)

SUMMARY = """Train one IMDB sentiment model and write its run to the store.

A run lands in <output>/<model>/<run-id>/; the same --run-id again resumes it from its
last completed epoch. Set IMDB_TRAIN_VERBOSE=1 to see TensorFlow's own start-up lines."""

EXIT_CODES = (
    f"exit codes: {contract.EXIT_OK} done, {contract.EXIT_BAD_INPUT} bad input (permanent), "
    f"{contract.EXIT_DIVERGED} the loss diverged (permanent), "
    f"{contract.EXIT_PREEMPTED} preempted or store outage (rerun to resume), "
    f"{contract.EXIT_GROUP_STOPPED} stopped with a preempted worker of its group, "
    f"{contract.EXIT_CRASH} unexpected error."
)


def run(argv: Sequence[str]) -> int:
    """Parse, check the store, train; map outcomes onto the exit-code contract."""
    from trainer import commandline, distribute, flags
    from trainer.storage import LocalStore, open_store
    from trainer.termination import Termination

    # Before the data is read: a SIGTERM while encoding also ends in a resumable exit 75.
    termination = Termination().install()
    cfg = None
    try:
        cfg = flags.config_from_args(argv)
        store = open_store(cfg.output)  # validates the scheme and bucket name
        if distribute.is_chief():  # only the chief writes; a probe of every worker would stay
            # Before the data is read: "cannot write to ..." at once. On a filesystem the
            # run's own folder too (a resumed run's read-only folder, a symlink loop on the
            # way); a bucket's permissions are the same everywhere in it.
            store.check_writable()
            if isinstance(store, LocalStore):
                store.child(cfg.model, cfg.run_id).check_writable()
        if distribute.is_multi_worker():
            # Keras 3 model.fit fails under MultiWorkerMirroredStrategy on TF 2.21
            # (keras-team/keras#20585); tf-keras runs it. Must be set before TF loads.
            os.environ.setdefault(contract.LEGACY_KERAS_ENV, "1")
            distribute.collective_timeout_from_env()  # a bad value is bad input, fail early
            distribute.peer_timeout_from_env()
        from trainer.train import train  # TensorFlow-free until the data is read

        train(cfg, termination=termination, store=store)
    except Exception as e:
        known = commandline.outcome(e, resumable=True)
        if known is not None:
            code, line = known
            if line:
                print(line, file=sys.stderr)
            return code
        reason = distribute.peer_failure(e) if distribute.is_multi_worker() else None
        if reason is None:
            raise
        # One synchronous group: a lost peer fails every worker; the Job reruns the whole
        # group with the same run id, which resumes from the last checkpoint.
        print(
            f"error: the worker group broke ({reason}); rerun all workers with "
            f"--run-id {cfg.run_id if cfg else '<the same id>'} to resume from the last "
            "checkpoint",
            file=sys.stderr,
        )
        return contract.EXIT_PREEMPTED
    return contract.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from trainer import flags

    if flags.wants_help(argv):
        sys.stdout.write(flags.help_text("python -m trainer", SUMMARY, EXIT_CODES))
        return contract.EXIT_OK
    try:
        return run(argv)
    except Exception:
        import traceback

        traceback.print_exc()
        return contract.EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
