"""Keep TensorFlow's and Keras's start-up noise off the terminal unless asked for.

TensorFlow writes absl lines (oneDNN, "Could not find cuda drivers", cuInit) straight to
file descriptor 2 while it loads, before TF_CPP_MIN_LOG_LEVEL can apply to them, so the
import itself runs with fd 2 pointed at /dev/null. IMDB_TRAIN_VERBOSE=1 shows everything.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

from trainer import contract


def verbose() -> bool:
    return os.environ.get(contract.VERBOSE_ENV) == "1"


@contextlib.contextmanager
def stderr_silenced():
    """fd 2 -> /dev/null for the block (C++ writes included); Python's sys.stderr is flushed."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow():
    """`import tensorflow`, quietly unless IMDB_TRAIN_VERBOSE=1; returns the module."""
    if verbose():
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Keras warns on every tf.data input that its `shuffle` argument is ignored.
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with stderr_silenced():
        import tensorflow as tf
    return tf


def unless_verbose():
    """stderr_silenced(), or nothing when IMDB_TRAIN_VERBOSE=1."""
    return contextlib.nullcontext() if verbose() else stderr_silenced()


@contextlib.contextmanager
def quietly():
    """The block runs without TensorFlow's C++ lines and Python warnings, unless verbose."""
    if verbose():
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with warnings.catch_warnings(), stderr_silenced():
        warnings.simplefilter("ignore")
        yield
