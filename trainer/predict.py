"""`python -m trainer.predict --run RUN "review" ...`: score raw reviews with a trained run.

Prints one JSON line per review: {"text": shortened review, "score": P(positive),
"label": "positive" | "negative"}. Reviews are encoded by `trainer.data.ids_from_texts` with
the run's own `word_index.json` and `config.json`, the function that encoded its training
data, so training and prediction cannot drift apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer import contract, quiet
from trainer.contract import INDEX_FROM
from trainer.data import DataError
from trainer.data.tokenizer import ENCODER_VERSION, ids_from_texts
from trainer.storage import NotFoundError, Store, StoreError, open_store

TEXT_CHARS = 80  # the `text` field of an output line is shortened to this many characters
BAD_BYTES = ("error", "replace")  # --bad-bytes: what to do with lines that are not UTF-8
POSITIVE, NEGATIVE = "positive", "negative"
# Keras's binary accuracy counts score > 0.5 as positive: the same threshold reproduces
# the accuracy a run recorded.
THRESHOLD = 0.5


class PredictError(ValueError):
    """Bad input to prediction: the message names the value and what is valid."""


# ----------------------------------------------------------------------------- runs


def _parent_uri(uri: str) -> tuple[str, str]:
    parent, _, name = uri.rstrip("/").rpartition("/")
    if uri.startswith("gs://") and "/" not in uri[len("gs://") :].rstrip("/"):
        return "", uri  # a bare bucket has no parent
    return (parent if parent or uri.startswith("/") else "."), name


def _through_latest(model_store: Store, shown: str) -> Store:
    from trainer.promotion import PointerError, read_latest

    model = model_store.uri.rstrip("/").rsplit("/", 1)[-1]
    try:
        pointer = read_latest(model_store, model if model in contract.MODELS else None)
    except PointerError as e:
        raise PredictError(str(e)) from None
    if pointer is None:
        raise PredictError(
            f"no {contract.LATEST} in {model_store.uri} for run {shown!r}: no run of this "
            "model was promoted there; pass a run directory <output>/<model>/<run-id>"
        )
    return model_store.child(pointer["run_id"])


def resolve_run(run: str) -> Store:
    """The store of a complete run: a run directory or URI, or `<model>/latest`.

    Raises:
        PredictError: no such run, or the run is incomplete (no `_SUCCESS`).
        StoreError: the URI is malformed or the store cannot be reached.
    """
    run = str(run or "").strip()
    if not run:
        raise PredictError(
            "no --run given: expected a run directory or URI such as runs/mean/latest, "
            "runs/mean/<run-id> or gs://bucket/prefix/mean/<run-id>"
        )
    store = open_store(run)
    if store.exists(contract.SUCCESS):
        return store
    parent, name = _parent_uri(run)
    if name == contract.LATEST_ALIAS and parent and not store.exists(contract.CONFIG):
        store = _through_latest(open_store(parent), run)
    elif store.exists(contract.LATEST) and not store.exists(contract.CONFIG):
        store = _through_latest(store, run)  # a model directory: its promoted run
    if store.exists(contract.SUCCESS):
        return store
    # Bounded checks, not a listing: --run / must not walk the whole filesystem.
    started = (contract.CONFIG, contract.MODEL_FILE, contract.METRICS)
    if any(store.exists(key) for key in started) or store.list(contract.CHECKPOINT_DIR):
        raise PredictError(
            f"run {store.uri} is incomplete: no {contract.SUCCESS} (still training, or it "
            "stopped; resume it with the same --run-id); pass a finished run"
        )
    raise PredictError(
        f"no run at {run!r}: expected a finished run directory <output>/<model>/<run-id> "
        "(local path, file:// or gs://) or <output>/<model>/latest"
    )


@dataclass
class LoadedRun:
    """A finished run's model and encoding, ready to score raw reviews."""

    store: Store
    model: object
    word_index: dict[str, int]
    vocab_size: int
    max_review_length: int
    index_from: int = INDEX_FROM
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return self.store.uri

    def encode(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """The model input of `texts`, by the encoder the run's training data went through."""
        return ids_from_texts(
            texts, self.word_index, self.vocab_size, self.max_review_length, self.index_from
        )

    def scores(
        self,
        texts: Sequence[str | bytes],
        batch_size: int = 256,
        progress: Callable[[int], object] | None = None,
    ) -> np.ndarray:
        """P(positive) of each review, float32, `batch_size` reviews per model call."""
        out = np.zeros(len(texts), dtype=np.float32)
        for lo in range(0, len(texts), batch_size):
            batch = texts[lo : lo + batch_size]
            probs = self.model.predict_on_batch(self.encode(batch))
            out[lo : lo + len(batch)] = np.asarray(probs, dtype=np.float32).reshape(-1)
            if progress is not None:
                progress(len(batch))
        return out


def _read_json(store: Store, key: str) -> dict:
    try:
        return json.loads(store.read_bytes(key))
    except NotFoundError:
        raise PredictError(
            f"run {store.uri} has no {key}: expected a run written by this trainer"
        ) from None
    except ValueError as e:
        raise PredictError(f"{store.uri}/{key} is not JSON: {e}") from None


def load_run(run: str) -> LoadedRun:
    """Resolve `run`, read its config and word index, and load its Keras model.

    Raises:
        PredictError: no such run, incomplete run, or a run this code cannot encode for.
        StoreError: the store cannot be read.
    """
    store = resolve_run(run)
    doc = _read_json(store, contract.CONFIG)
    cfg = doc.get("config", {})
    encoding = doc.get("encoding", {})
    version = encoding.get("version", ENCODER_VERSION)
    if version != ENCODER_VERSION:
        raise PredictError(
            f"run {store.uri} was encoded by encoder version {version}: this trainer has "
            f"version {ENCODER_VERSION}; predict with the trainer version that made the run"
        )
    word_index = _read_json(store, contract.WORD_INDEX)
    if not isinstance(word_index, dict):
        raise PredictError(
            f"{store.uri}/{contract.WORD_INDEX} is a JSON {type(word_index).__name__}: "
            "expected an object of word -> rank; the run's files are damaged"
        )
    if not word_index:
        raise PredictError(
            f"run {store.uri} has an empty {contract.WORD_INDEX}: it was trained on ids "
            "without their words (an imdb.npz without imdb_word_index.json), so raw text "
            "cannot be encoded for it"
        )
    # Checked before the model is fetched: one line naming the file, never a traceback.
    ranks = word_ranks(store.uri, word_index)
    sizes = run_encoding(store.uri, cfg, encoding)
    # A run of several workers trains with tf-keras, whose files Keras 3 does not load;
    # this must be decided before TensorFlow is imported.
    if doc.get("keras") == "tf-keras" and "tensorflow" not in sys.modules:
        os.environ[contract.LEGACY_KERAS_ENV] = "1"
    with tempfile.TemporaryDirectory(prefix="imdb-predict-") as tmp:
        local = Path(tmp) / contract.MODEL_FILE
        store.download_file(contract.MODEL_FILE, local)
        with quiet.quietly():
            import tensorflow as tf

            model = tf.keras.models.load_model(local, compile=False)
    try:
        metrics = json.loads(store.read_bytes(contract.METRICS))
    except (NotFoundError, ValueError):
        metrics = {}
    _check_model(store.uri, model, *sizes[:2])
    return LoadedRun(
        store=store,
        model=model,
        word_index=ranks,
        vocab_size=sizes[0],
        max_review_length=sizes[1],
        index_from=sizes[2],
        config=doc,
        metrics=metrics,
    )


_MAX_RANK = 2**31 - 1  # ranks become int32 ids


def word_ranks(uri: str, word_index: dict) -> dict[str, int]:
    """word_index.json's words and ranks, each rank a positive integer, or one line naming
    the file and the first bad entry (a rank that is text, negative or huge would be
    another word's id, or no id at all)."""
    out = {}
    for word, rank in word_index.items():
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= _MAX_RANK:
            raise PredictError(
                f"{uri}/{contract.WORD_INDEX}: the rank of {str(word)[:40]!r} is {rank!r}: "
                f"expected an integer from 1 to {_MAX_RANK}; the run's files are damaged"
            )
        out[str(word)] = rank
    return out


def run_encoding(uri: str, cfg: Any, encoding: Any) -> tuple[int, int, int]:
    """(vocab_size, max_review_length, index_from) from config.json, each checked."""
    from trainer.config import MAXIMA, TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    if not isinstance(cfg, dict) or not isinstance(encoding, dict):
        raise PredictError(
            f"{uri}/{contract.CONFIG}: 'config' and 'encoding' must be JSON objects; the "
            "run's files are damaged"
        )
    values = []
    for key, source, default, lo, hi in (
        ("vocab_size", cfg, defaults["vocab_size"], 1, MAXIMA["vocab_size"]),
        ("max_review_length", cfg, defaults["max_review_length"], 1, MAXIMA["max_review_length"]),
        ("index_from", encoding, INDEX_FROM, 0, 1000),
    ):
        value = source.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise PredictError(
                f"{uri}/{contract.CONFIG}: {key} is {value!r}: expected an integer from {lo} "
                f"to {hi}; the run's files are damaged"
            )
        values.append(value)
    return values[0], values[1], values[2]


def _check_model(uri: str, model: Any, vocab_size: int, max_review_length: int) -> None:
    """The model takes what config.json says it was trained on, or one line saying not."""
    try:
        rows = int(model.get_layer("embedding").input_dim)
    except (ValueError, AttributeError):
        rows = None
    width = (model.input_shape or (None, None))[-1] if hasattr(model, "input_shape") else None
    if rows is not None and rows != vocab_size:
        raise PredictError(
            f"{uri}/{contract.CONFIG}: vocab_size {vocab_size} disagrees with the model's "
            f"embedding of {rows} rows; the run's files are damaged or mixed"
        )
    if width is not None and width != max_review_length:
        raise PredictError(
            f"{uri}/{contract.CONFIG}: max_review_length {max_review_length} disagrees with "
            f"the model's input of {width} words; the run's files are damaged or mixed"
        )


# ----------------------------------------------------------------------------- input


def read_lines(data: bytes, origin: str, bad_bytes: str = "error") -> list[str]:
    """One review per line; blank lines are skipped.

    Raises:
        PredictError: a line is not UTF-8 (with bad_bytes="error"), or there is no review.
    """
    reviews = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            if bad_bytes != "replace":
                raise PredictError(
                    f"{origin} line {number} is not UTF-8 (byte 0x{line[e.start]:02x} at "
                    f"column {e.start + 1}): convert it to UTF-8 or pass --bad-bytes replace"
                ) from None
            text = line.decode("utf-8", errors="replace")
        if text.strip():
            reviews.append(text)
    if not reviews:
        raise PredictError(f"{origin} has no reviews: expected one review per line")
    return reviews


def _shorten(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: max(chars - 3, 0)] + "..."


def _progress(total: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc="predict",
        unit="review",
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not show or os.environ.get(contract.PROGRESS_ENV, "1") == "0",
    )


def predict(
    reviews: Sequence[str],
    run: str = "",
    file: str = "",
    batch_size: int = 256,
    bad_bytes: str = "error",
    text_chars: int = TEXT_CHARS,
    out=None,
) -> list[dict]:
    """Score `reviews` (or the lines of `file`, or stdin) with `run`; print JSON lines.

    Raises:
        PredictError, StoreError, DataError: bad input, before anything is printed.
    """
    out = out or sys.stdout
    try:
        batch_size = int(batch_size)
        text_chars = int(text_chars)
    except (TypeError, ValueError):
        raise PredictError(
            f"invalid --batch-size {batch_size!r} or --text-chars {text_chars!r}: "
            "expected positive integers"
        ) from None
    if batch_size <= 0 or text_chars <= 0:
        raise PredictError(
            f"invalid --batch-size {batch_size} or --text-chars {text_chars}: "
            "expected positive integers"
        )
    if bad_bytes not in BAD_BYTES:
        raise PredictError(
            f"invalid --bad-bytes {bad_bytes!r}: expected one of {', '.join(BAD_BYTES)}"
        )
    file = "" if file is None else str(file)
    if reviews and file:
        raise PredictError("reviews given both as arguments and with --file: pass one of them")
    if reviews:
        texts = []
        for i, review in enumerate(reviews, start=1):
            try:
                review.encode("utf-8")  # undecodable argv bytes arrive as surrogates
            except UnicodeEncodeError:
                if bad_bytes != "replace":
                    raise PredictError(
                        f"review argument {i} is not UTF-8: convert it or pass --bad-bytes replace"
                    ) from None
                review = review.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            if not review.strip():
                raise PredictError(
                    f"review argument {i} is empty: a review needs at least one word"
                )
            texts.append(review)
    else:
        if file in ("", "-"):
            if not file and sys.stdin.isatty():
                raise PredictError(
                    "no reviews: pass them as arguments, with --file PATH, or on stdin"
                )
            data, origin = sys.stdin.buffer.read(), "stdin"
        else:
            try:
                data, origin = Path(file).read_bytes(), file
            except OSError as e:
                raise PredictError(
                    f"cannot read --file {file!r}: {e.strerror}; expected a text file with "
                    "one review per line, or - for stdin"
                ) from None
        texts = read_lines(data, origin, bad_bytes)
    loaded = load_run(run)
    results = []
    with _progress(len(texts), show=len(texts) > batch_size) as bar:
        for lo in range(0, len(texts), batch_size):
            batch = texts[lo : lo + batch_size]
            for text, score in zip(batch, loaded.scores(batch, batch_size), strict=True):
                row = {
                    "text": _shorten(text, text_chars),
                    "score": round(float(score), 6),
                    "label": POSITIVE if score > THRESHOLD else NEGATIVE,
                }
                results.append(row)
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(batch))
    return results


# ----------------------------------------------------------------------------- CLI


def _split_argv(fn: Callable, argv: list[str]) -> tuple[list[str], list[str]]:
    """(flags for fire, positional reviews): fire would parse a review like "10/10" or
    "(great)" as a Python value, so reviews never go through it."""
    names = list(inspect.signature(fn).parameters)
    params = {n.replace("_", "-") for n in names} | set(names)
    # fire's short forms: -r for --run where no other flag starts with the same letter.
    firsts = [n[0] for n in names]
    short = {f"-{n[0]}" for n in names if firsts.count(n[0]) == 1}
    flags: list[str] = []
    reviews: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            reviews.extend(argv[i + 1 :])
            break
        if arg in ("-h", "--help"):
            flags.append(arg)
        elif arg in short:
            if i + 1 >= len(argv):
                raise PredictError(f"flag {arg} needs a value")
            long = next(n for n in names if n[0] == arg[1])
            flags.append(f"--{long}={argv[i + 1]}")
            i += 1
        elif arg.startswith("--") and len(arg) > 2:
            name = arg[2:].split("=", 1)[0]
            if name not in params:
                valid = ", ".join(f"--{p.replace('_', '-')}" for p in names)
                raise PredictError(f"unknown flag --{name}: expected one of {valid}")
            if "=" not in arg:
                if i + 1 >= len(argv):
                    raise PredictError(f"flag --{name} needs a value")
                # One token: fire reads a lone "-" as its command separator, not a value.
                arg = f"{arg}={argv[i + 1]}"
                i += 1
            flags.append(arg)
        else:
            reviews.append(arg)
        i += 1
    return flags, reviews


def cli(
    fn: Callable[..., None] | Callable[[list[str]], Callable[..., None]],
    argv: list[str] | None,
    name: str,
    positional: bool = False,
) -> int:
    """Run a fire command with this project's exit codes and one-line errors.

    With `positional`, `fn(reviews)` makes the command: the positional arguments are
    passed as they are, not parsed by fire.
    """
    import fire

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command = fn([]) if positional else fn
        flags, rest = _split_argv(command, argv)
        if rest and not positional:
            raise PredictError(f"unexpected argument {rest[0]!r}: see --help")
        fire.Fire(fn(rest) if positional else fn, command=flags, name=name)
    except (PredictError, StoreError, DataError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return contract.EXIT_BAD_INPUT
    except SystemExit as e:  # fire's usage errors and --help
        return e.code if isinstance(e.code, int) else contract.EXIT_BAD_INPUT
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return contract.EXIT_OK
    return contract.EXIT_OK


def _command(reviews: list[str]) -> Callable[..., None]:
    def run(
        run: str = "",
        file: str = "",
        batch_size: int = 256,
        bad_bytes: str = "error",
        text_chars: int = TEXT_CHARS,
    ) -> None:
        """Score IMDB reviews with a trained run; one JSON line per review on stdout.

        Reviews are the positional arguments (after -- if one starts with -), or the
        lines of --file, or stdin (one review per line, blank lines skipped). Each output
        line: {"text", "score", "label"}: score is P(positive), label is "positive" when
        score > 0.5.

        Args:
            run: a finished run: a directory or URI (local path, file:// or
                gs://bucket/prefix/<model>/<run-id>); <model>/latest resolves through
                <model>/latest.json.
            file: a UTF-8 text file with one review per line; "-" reads stdin.
            batch_size: reviews per model call.
            bad_bytes: lines that are not UTF-8: "error" (exit 2) or "replace" (U+FFFD,
                which changes no word: only ASCII letters, digits and ' make words).
            text_chars: the "text" field is shortened to this many characters.

        Exit codes: 0 done, 2 bad input (unknown or incomplete run, empty input, bytes
        that are not UTF-8, bad flag).
        """
        # fire parses values by their look (--run 123 is an int): coerce here.
        predict(
            reviews,
            run=str(run),
            file=str(file),
            batch_size=batch_size,
            bad_bytes=str(bad_bytes),
            text_chars=text_chars,
        )

    return run


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer.predict`."""
    return cli(_command, argv, name="trainer.predict", positional=True)


if __name__ == "__main__":
    raise SystemExit(main())
