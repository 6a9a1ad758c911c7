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

    Memory: none beyond the arrays themselves (a memory-mapped cache entry: pages shared
    by the processes of a node). The pipelines hold row numbers, and each batch gathers its
    rows from the arrays; the shuffle buffer holds row numbers too, in the same order as
    shuffling the rows themselves would give (the shuffle draws by position, whatever the
    elements): the same batches, without two or three copies of the data in TensorFlow.

    Returns:
        (train, test, steps_per_epoch): steps_per_epoch is None unless `even_batches`.
    """
    import tensorflow as tf

    n = len(ds.y_train)
    rows = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    steps = None
    if even_batches:
        rows = rows.repeat()
        steps = -(-n // global_batch_size)
    train = (
        rows.batch(global_batch_size)
        .map(_gather(ds.x_train, ds.y_train))
        .prefetch(tf.data.AUTOTUNE)
    )
    test = (
        tf.data.Dataset.range(len(ds.y_test))
        .batch(eval_batch_size or global_batch_size)
        .map(_gather(ds.x_test, ds.y_test))
        .prefetch(tf.data.AUTOTUNE)
    )
    return train, test, steps


def _gather(x, y):
    """A batch of row numbers -> (x[rows], y[rows]), read from the numpy arrays."""
    import tensorflow as tf

    def take(rows):
        return x[rows], y[rows]

    def fn(rows):
        xs, ys = tf.numpy_function(
            take, [rows], (tf.as_dtype(x.dtype), tf.as_dtype(y.dtype)), stateful=False
        )
        xs.set_shape((None, *x.shape[1:]))
        ys.set_shape((None, *y.shape[1:]))
        return xs, ys

    return fn
