"""IMDB data: a source (Keras npz | aclImdb tarball or directory | gs://) -> padded id arrays.

The package, one concern a module:
- `sources`: 'keras' (downloaded, verified), a path, file:// or gs:// -> a local file;
- `archives`: an aclImdb tarball or directory -> raw reviews, within a size ceiling;
- `npz`: Keras's imdb.npz read without ever executing pickled code;
- `tokenizer`: the one tokeniser (training, prediction and the serving graph) and the ids;
- `cache`: encoded arrays on disk, self-verifying, keyed by source and encoding;
- `dataset`: `load` (all of the above -> a `Dataset`) and `raw_split`;
- `pipeline`: the tf.data pipelines (the only module that imports TensorFlow).

The raw-text encoding reproduces `keras.datasets.imdb`: words ranked by frequency over
train and test (ties by first occurrence), id = rank + index_from (3), 1 = start of
review, 2 = out of vocabulary, 0 = padding; padded and truncated at the front.
"""

from __future__ import annotations

from trainer.data.archives import read_reviews
from trainer.data.common import NPZ_ARRAYS, DataError, default_cache_dir, max_data_bytes
from trainer.data.dataset import Dataset, encode_aclimdb, encode_keras_npz, load, raw_split
from trainer.data.sources import resolve_source
from trainer.data.tokenizer import (
    ENCODER_VERSION,
    encoding_doc,
    ids_from_ranks,
    ids_from_texts,
    tokenize_and_rank,
)


def make_tf_datasets(*args, **kwargs):
    """trainer.data.pipeline.make_tf_datasets, imported (with TensorFlow) when called."""
    from trainer.data.pipeline import make_tf_datasets

    return make_tf_datasets(*args, **kwargs)


__all__ = [
    "ENCODER_VERSION",
    "NPZ_ARRAYS",
    "DataError",
    "Dataset",
    "default_cache_dir",
    "encode_aclimdb",
    "encode_keras_npz",
    "encoding_doc",
    "ids_from_ranks",
    "ids_from_texts",
    "load",
    "make_tf_datasets",
    "max_data_bytes",
    "raw_split",
    "read_reviews",
    "resolve_source",
    "tokenize_and_rank",
]
