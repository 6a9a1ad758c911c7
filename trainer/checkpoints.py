"""A run's checkpoints in its store: one per completed epoch (weights and optimizer, with
the history and timings beside it), written at each epoch's end, read back to resume.

Layout: `checkpoints/epoch-NNNN.keras` and `checkpoints/state-NNNN.json`
(trainer.contract). A checkpoint that cannot be read back is skipped for the one before.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

from trainer import contract
from trainer.state import RunState
from trainer.storage import Store, StoreError, upload_tree


def epochs(store: Store) -> list[int]:
    """Epochs with a checkpoint in the run's store, newest first."""
    found = map(contract.checkpoint_epoch, store.list(contract.CHECKPOINT_DIR))
    return sorted((e for e in found if e), reverse=True)


def load(store: Store, epoch: int, workdir: Path):
    """(model, state) of one epoch's checkpoint; raises when it cannot be read back."""
    import tensorflow as tf

    state = RunState.from_json(store.read_bytes(contract.state_key(epoch)))
    if state.epochs_completed != epoch:
        raise ValueError(f"its state records {state.epochs_completed} epochs, not {epoch}")
    local = workdir / f"resume-{epoch:04d}.keras"
    store.download_file(contract.checkpoint_key(epoch), local)
    return tf.keras.models.load_model(local), state


def restore_newest(store: Store, workdir: Path, log: Callable[[str], None]):
    """(model, epoch, state) of the newest readable checkpoint, or None.

    A checkpoint that cannot be read back (cut short by a full disk or a kill during
    upload, or its state file missing) is skipped with a message, falling back to the one
    before it. Call under the strategy's scope: the checkpoint carries weights and
    optimizer.
    """
    found = epochs(store)
    for epoch in found:
        try:
            model, state = load(store, epoch, workdir)
        # TypeError, RecursionError: a state file of another shape, or nested past the parser.
        except (StoreError, OSError, ValueError, KeyError, TypeError, RecursionError,
                zipfile.BadZipFile) as e:  # fmt: skip
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            log(f"checkpoint of epoch {epoch} is unreadable ({reason}); skipping it")
            continue
        return model, epoch, state
    if found:
        log(f"no readable checkpoint in {store.uri}; starting from scratch")
    return None


def save(
    model,
    epoch: int,
    state: RunState,
    workdir: Path,
    store: Store,
    chief: bool,
    log: Callable[[str], None],
) -> None:
    """Write an epoch's checkpoint: every worker saves (collectives may be involved), only
    the chief uploads it, its state and the TensorBoard logs so far."""
    local = workdir / contract.checkpoint_key(epoch)
    local.parent.mkdir(parents=True, exist_ok=True)
    model.save(local)
    if chief:
        # State before the checkpoint itself: a checkpoint whose state is missing
        # would not be resumable; a state without checkpoint is simply ignored.
        store.write_bytes(contract.state_key(epoch), state.to_json())
        store.upload_file(local, contract.checkpoint_key(epoch))
        upload_tree(store, workdir / contract.TENSORBOARD_DIR, contract.TENSORBOARD_DIR)
        where = f"saved to {store.uri}/{contract.CHECKPOINT_DIR}/"
    else:
        where = "done (chief uploads)"
    local.unlink()  # the store has it: keep the pod's scratch volume small
    log(f"checkpoint: epoch {epoch} {where}")
