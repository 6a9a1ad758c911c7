"""A run's checkpoints in its store: one per completed epoch (weights and optimizer, with
the history and timings beside it), written at each epoch's end, and one of an epoch cut
short by SIGTERM (the same, plus where in the epoch it stopped); read back to resume.

Layout: `checkpoints/epoch-NNNN.keras` and `checkpoints/state-NNNN.json`, in-epoch
`checkpoints/epoch-NNNN-step-SSSSSS.keras` and `checkpoints/state-NNNN-step-SSSSSS.json`
(trainer.contract). Resuming takes the newest: the furthest (epoch, step). A checkpoint that
cannot be read back is skipped for the one before.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from trainer import contract
from trainer.state import InEpoch, RunState
from trainer.storage import Store, StoreError, upload_tree


def epochs(store: Store) -> list[int]:
    """Epochs with a checkpoint in the run's store, newest first."""
    found = map(contract.checkpoint_epoch, store.list(contract.CHECKPOINT_DIR))
    return sorted((e for e in found if e), reverse=True)


def positions(store: Store) -> list[tuple[int, int]]:
    """(epochs completed, steps of the next epoch done) of every checkpoint, newest first:
    an epoch's checkpoint is (epoch, 0), an in-epoch one of epoch E at step S is (E - 1, S)."""
    found = []
    for key in store.list(contract.CHECKPOINT_DIR):
        epoch = contract.checkpoint_epoch(key)
        part = contract.in_epoch_position(key)
        if epoch:
            found.append((epoch, 0))
        elif part and part[0] >= 1 and part[1] >= 1:
            found.append((part[0] - 1, part[1]))
    return sorted(found, reverse=True)


def _keys(epochs_done: int, step: int) -> tuple[str, str]:
    if step:
        return (
            contract.in_epoch_checkpoint_key(epochs_done + 1, step),
            contract.in_epoch_state_key(epochs_done + 1, step),
        )
    return contract.checkpoint_key(epochs_done), contract.state_key(epochs_done)


def load(store: Store, epoch: int, workdir: Path, step: int = 0):
    """(model, state) of one checkpoint: epoch `epoch`'s, or with `step` the in-epoch one
    after `epoch` epochs and `step` steps of the next; raises when it cannot be read back."""
    import tensorflow as tf

    model_key, state_key = _keys(epoch, step)
    state = RunState.from_json(store.read_bytes(state_key))
    if state.epochs_completed != epoch:
        raise ValueError(f"its state records {state.epochs_completed} epochs, not {epoch}")
    part = state.in_epoch
    if step and (part is None or (part.epoch, part.step) != (epoch, step)):
        raise ValueError(f"its state does not record step {step} of epoch {epoch + 1}")
    local = workdir / Path(model_key).name.replace("epoch-", "resume-", 1)
    store.download_file(model_key, local)
    return tf.keras.models.load_model(local), state


def restore_newest(store: Store, workdir: Path, log: Callable[[str], None]):
    """(model, epoch, state) of the newest readable checkpoint, or None.

    The newest is the furthest one: an in-epoch checkpoint (state.in_epoch says where in
    the epoch) beats the checkpoint of the epoch before it. A checkpoint that cannot be
    read back (cut short by a full disk or a kill during upload, or its state file
    missing) is skipped with a message, falling back to the one before it. Call under the
    strategy's scope: the checkpoint carries weights and optimizer.
    """
    found = positions(store)
    for epoch, step in found:
        try:
            model, state = load(store, epoch, workdir, step)
        # TypeError, RecursionError: a state file of another shape, or nested past the parser.
        except (StoreError, OSError, ValueError, KeyError, TypeError, RecursionError,
                zipfile.BadZipFile) as e:  # fmt: skip
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            what = f"step {step} of epoch {epoch + 1}" if step else f"epoch {epoch}"
            log(f"checkpoint of {what} is unreadable ({reason}); skipping it")
            continue
        if not step:
            state.in_epoch = None
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


def save_in_epoch(
    model,
    part: InEpoch,
    state: RunState,
    workdir: Path,
    store: Store,
    chief: bool,
    log: Callable[[str], None],
) -> float:
    """Write the checkpoint of an epoch cut short (SIGTERM): weights, optimizer and where
    the epoch stopped, within the grace period; returns the seconds it took.

    Every worker saves (as `save`), only the chief uploads. The TensorBoard logs wait for
    the epoch's own checkpoint: the grace period is short (15 s on GKE Spot) and they hold
    nothing of the partial epoch.
    """
    t0 = time.perf_counter()
    model_key, state_key = _keys(part.epoch, part.step)
    local = workdir / model_key
    local.parent.mkdir(parents=True, exist_ok=True)
    model.save(local)
    doc = RunState(history=state.history, epoch_seconds=state.epoch_seconds, in_epoch=part)
    if chief:
        store.write_bytes(state_key, doc.to_json())  # state first, as in `save`
        store.upload_file(local, model_key)
        where = f"saved to {store.uri}/{contract.CHECKPOINT_DIR}/"
    else:
        where = "done (chief uploads)"
    local.unlink()
    seconds = time.perf_counter() - t0
    log(
        f"checkpoint: step {part.step} of {part.steps} in epoch {part.epoch + 1} {where} "
        f"in {seconds:.1f}s"
    )
    return seconds


def drop_in_epoch(store: Store, chief: bool) -> None:
    """Remove in-epoch checkpoints once an epoch's own checkpoint has superseded them: they
    are never resumed from again, and each is a whole model."""
    if not chief:
        return
    for key in store.list(contract.CHECKPOINT_DIR):
        if contract.is_in_epoch_key(key):
            store.delete_prefix(key)
