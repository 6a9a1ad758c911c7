"""Export a run as a TensorFlow SavedModel: a batch of raw review strings in, probabilities out.

The SavedModel carries its own tokeniser (tf.strings ops and a static lookup table built
from the run's vocabulary), a graph-mode copy of `trainer.data.ids_from_texts`, so TF Serving,
KServe and Vertex AI serve it without any code of this project. Layout:
`<run>/serving/<version>/saved_model.pb`: TF Serving and KServe's TensorFlow runtime take
`<run>/serving` as the model base path (one numeric version directory); Vertex AI takes the
version directory itself.

`python -m trainer.serving --run RUN` (trainer/serving/__main__.py) exports a run trained
before runs wrote `serving/`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from trainer.contract import INDEX_FROM, OOV_CHAR, SERVING_VERSION, START_CHAR
from trainer.data.tokenizer import NON_WORD_PATTERN

INPUT_KEY = "reviews"  # the signature's one input: tf.string [batch]
OUTPUT_KEY = "probability"  # serving_default's output: float32 [batch], P(positive)
IDS_KEY = "ids"  # the "tokenize" signature's output: int32 [batch, max_review_length]
TOKENIZE_SIGNATURE = "tokenize"
DEFAULT_SIGNATURE = "serving_default"


def vocabulary(
    word_index: Mapping[str, int], vocab_size: int, index_from: int = INDEX_FROM
) -> tuple[list[str], list[int]]:
    """The words that have their own id (rank + index_from < vocab_size), and those ids."""
    pairs = sorted(
        (rank + index_from, word)
        for word, rank in word_index.items()
        if rank + index_from < vocab_size
    )
    return [w for _, w in pairs], [i for i, _ in pairs]


def _module(
    model, word_index: Mapping[str, int], vocab_size: int, max_review_length: int, index_from: int
):
    import tensorflow as tf

    words, ids = vocabulary(word_index, vocab_size, index_from)
    maxlen = int(max_review_length)

    class Serving(tf.Module):
        """The model behind an in-graph copy of the Python encoder."""

        def __init__(self) -> None:
            super().__init__(name="imdb_serving")
            self.model = model
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(words or [""], tf.string),
                    tf.constant(ids or [OOV_CHAR], tf.int64),
                ),
                default_value=OOV_CHAR,
            )

        def _encode(self, reviews):
            # ASCII-only, byte-wise lower-casing: what bytes.lower() does in Python.
            text = tf.strings.lower(reviews)
            # RE2 skips strings that are not valid UTF-8; replacing bad bytes with U+FFFD
            # changes no word, since no byte >= 0x80 is a word character.
            text = tf.strings.unicode_transcode(
                text,
                "UTF-8",
                "UTF-8",
                errors="replace",
                replacement_char=0xFFFD,
                replace_control_characters=False,
            )
            text = tf.strings.regex_replace(text, NON_WORD_PATTERN, " ")
            tokens = tf.strings.split(text)
            word_ids = tf.ragged.map_flat_values(self.table.lookup, tokens)
            n = tf.shape(reviews, out_type=tf.int64)[0]
            start = tf.RaggedTensor.from_tensor(tf.fill([n, 1], tf.constant(START_CHAR, tf.int64)))
            seq = tf.concat([start, word_ids], axis=1)
            # Keep the last maxlen ids (truncate at the front), then pad at the front.
            lengths = tf.minimum(seq.row_lengths(), maxlen)
            offsets = seq.row_splits[1:] - lengths
            take = tf.RaggedTensor.from_row_lengths(
                tf.gather(seq.values, tf.ragged.range(offsets, seq.row_splits[1:]).values),
                lengths,
            )
            left = take.to_tensor(default_value=0, shape=[None, maxlen])
            src = tf.range(maxlen, dtype=tf.int64)[None, :] - (maxlen - lengths)[:, None]
            dense = tf.where(
                src >= 0,
                tf.gather(left, tf.maximum(src, 0), batch_dims=1),
                tf.zeros_like(left),
            )
            return tf.cast(dense, tf.int32)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
        def tokenize(self, reviews):
            return {IDS_KEY: self._encode(reviews)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
        def serve(self, reviews):
            probs = self.model(self._encode(reviews), training=False)
            return {OUTPUT_KEY: tf.reshape(tf.cast(probs, tf.float32), [-1])}

    return Serving()


def _plain_copy(model):
    """The model with ordinary variables: a copy outside any distribution strategy.

    A model trained under a MirroredStrategy holds mirrored variables; the SavedModel must
    not depend on the strategy (a serving process has one device), so the weights are
    copied into a fresh clone built under the default strategy.
    """
    import tensorflow as tf

    keras = tf.keras
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def export(
    model,
    word_index: Mapping[str, int],
    cfg,
    out_dir: str | os.PathLike[str],
    index_from: int = INDEX_FROM,
) -> Path:
    """Write the serving SavedModel of a trained model to `out_dir/<version>/`.

    Args:
        model: the trained Keras model (int ids [batch, max_review_length] -> [batch, 1]).
        word_index: the run's word -> 1-based rank.
        cfg: anything with `vocab_size` and `max_review_length` (a TrainConfig).
        out_dir: the local `serving/` directory.
        index_from: the run's index_from.

    Returns:
        The version directory written.
    """
    import tensorflow as tf

    version_dir = Path(out_dir) / SERVING_VERSION
    module = _module(
        _plain_copy(model), word_index, cfg.vocab_size, cfg.max_review_length, index_from
    )
    tf.saved_model.save(
        module,
        str(version_dir),
        signatures={DEFAULT_SIGNATURE: module.serve, TOKENIZE_SIGNATURE: module.tokenize},
    )
    return version_dir
