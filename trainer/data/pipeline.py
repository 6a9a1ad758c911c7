"""The tf.data pipelines a run trains and tests on (TensorFlow is imported here only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the annotation only: no import at run time
    from trainer.data.dataset import Dataset


def make_tf_datasets(
    ds: Dataset,
    global_batch_size: int,
    seed: int = 0,
    eval_batch_size: int | None = None,
    even_batches: bool = False,
):
    """tf.data pipelines at the GLOBAL batch size (the strategy splits each batch).

    The test split is batched at `eval_batch_size` (default: the training batch): without
    gradients the batch size does not change the result, and larger batches are faster.

    With `even_batches` every training batch is full: the shuffled data repeats and an epoch
    is ceil(N / batch) batches, the last one completed from the next pass. A worker group
    needs that: the embedding's sparse gradient is all-gathered across workers, and a
    collective fails when the final batch splits into pieces of different shapes.

    Returns:
        (train, test, steps_per_epoch): steps_per_epoch is None unless `even_batches`.
    """
    import tensorflow as tf

    train = (
        tf.data.Dataset.from_tensor_slices((ds.x_train, ds.y_train))
        .cache()
        .shuffle(len(ds.y_train), seed=seed, reshuffle_each_iteration=True)
    )
    steps = None
    if even_batches:
        train = train.repeat()
        steps = -(-len(ds.y_train) // global_batch_size)
    train = train.batch(global_batch_size).prefetch(tf.data.AUTOTUNE)
    test = (
        tf.data.Dataset.from_tensor_slices((ds.x_test, ds.y_test))
        .batch(eval_batch_size or global_batch_size)
        .cache()
        .prefetch(tf.data.AUTOTUNE)
    )
    return train, test, steps
