"""Score raw reviews with a trained run: one JSON line per review, {"text": shortened
review, "score": P(positive), "label": "positive" | "negative"}.

Reviews are encoded by `trainer.data.ids_from_texts` with the run's own `word_index.json`
and `config.json`, the function that encoded its training data, so training and
prediction cannot drift apart. The command line is `trainer/predict/__main__.py`.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Sequence

from trainer import contract
from trainer.commandline import as_int
from trainer.contract import KnownError
from trainer.numbers import bounded_int
from trainer.runs import load_run

TEXT_CHARS = 80  # the `text` field of an output line is shortened to this many characters
BAD_BYTES = ("error", "replace")  # --bad-bytes: what to do with lines that are not UTF-8
POSITIVE, NEGATIVE = "positive", "negative"
# Keras's binary accuracy counts score > 0.5 as positive: the same threshold reproduces
# the accuracy a run recorded.
THRESHOLD = 0.5
# Bounds on what one call reads and holds: the longest IMDB review is about 14 kB, so a
# review of more than MAX_REVIEW_BYTES is not one (a file without newlines, a binary); the
# whole input stops at MAX_INPUT_BYTES (--file /dev/zero, `yes |` on stdin) and
# MAX_REVIEWS reviews, before anything is scored.
MAX_REVIEW_BYTES = 100_000
MAX_INPUT_BYTES = 64 << 20
MAX_REVIEWS = 100_000
MAX_BATCH = 65_536  # reviews per model call


class PredictError(KnownError, ValueError):
    """Bad input to prediction: the message names the value and what is valid."""


def read_lines(data: bytes, origin: str, bad_bytes: str = "error") -> list[str]:
    """One review per line; blank lines are skipped.

    Raises:
        PredictError: a line is not UTF-8 (with bad_bytes="error"), or there is no review.
    """
    reviews = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if len(line) > MAX_REVIEW_BYTES:
            raise PredictError(
                f"{origin} line {number} is {len(line)} bytes: a review is at most "
                f"{MAX_REVIEW_BYTES} bytes (one review per line)"
            )
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
            if len(reviews) > MAX_REVIEWS:
                raise PredictError(
                    f"{origin} has more than {MAX_REVIEWS} reviews: split it into several calls"
                )
    if not reviews:
        raise PredictError(f"{origin} has no reviews: expected one review per line")
    return reviews


def read_input(file: str) -> tuple[bytes, str]:
    """The bytes of --file (a regular file) or of stdin ("" or "-"), at most
    MAX_INPUT_BYTES of them.

    Raises:
        PredictError: not a regular file (a FIFO, a device: they block or never end),
            unreadable, or more than MAX_INPUT_BYTES.
    """
    if file in ("", "-"):
        origin, stream = "stdin", sys.stdin.buffer
        data = stream.read(MAX_INPUT_BYTES + 1)
    else:
        origin = file
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat decides.
            fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            raise PredictError(
                f"cannot read --file {file!r}: {e.strerror}; expected a text file with "
                "one review per line, or - for stdin"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PredictError(
                f"--file {file!r} is not a regular file (a directory, FIFO or device): "
                "expected a text file with one review per line, or - for stdin"
            )
        with os.fdopen(fd, "rb") as f:
            try:
                data = f.read(MAX_INPUT_BYTES + 1)
            except OSError as e:
                raise PredictError(f"cannot read --file {file!r}: {e.strerror}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise PredictError(
            f"{origin} is more than {MAX_INPUT_BYTES} bytes: split it into several calls"
        )
    return data, origin


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
    # Bounded: a batch is held in memory at once (and int() took '٣' and 1e9).
    # as_int first: fire reads `--batch-size 1e3` as 1000.0.
    batch_size = bounded_int(
        as_int(batch_size) or batch_size, "--batch-size", 1, MAX_BATCH, PredictError
    )
    text_chars = bounded_int(
        as_int(text_chars) or text_chars, "--text-chars", 1, MAX_REVIEW_BYTES, PredictError
    )
    if bad_bytes not in BAD_BYTES:
        raise PredictError(
            f"invalid --bad-bytes {bad_bytes!r}: expected one of {', '.join(BAD_BYTES)}"
        )
    file = "" if file is None else str(file)
    if reviews and file:
        raise PredictError("reviews given both as arguments and with --file: pass one of them")
    if len(reviews) > MAX_REVIEWS:
        raise PredictError(
            f"{len(reviews)} review arguments: at most {MAX_REVIEWS} a call; split them"
        )
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
            size = len(review.encode("utf-8", "surrogateescape"))
            if size > MAX_REVIEW_BYTES:
                raise PredictError(
                    f"review argument {i} is {size} bytes: a review is at most "
                    f"{MAX_REVIEW_BYTES} bytes"
                )
            texts.append(review)
    else:
        if not file and sys.stdin.isatty():
            raise PredictError("no reviews: pass them as arguments, with --file PATH, or on stdin")
        texts = read_lines(*read_input(file), bad_bytes)
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
