"""`python -m trainer.predict --run RUN "review" ...`: score raw reviews with a trained run."""

from __future__ import annotations

from collections.abc import Callable

from trainer.commandline import run_fire
from trainer.predict import (
    MAX_INPUT_BYTES,
    MAX_REVIEW_BYTES,
    MAX_REVIEWS,
    TEXT_CHARS,
    predict,
)


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

        Bounds: a review is at most {review} bytes; one call reads at most {input} MiB
        and {reviews} reviews (split larger inputs); --file must be a regular file.

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

    # The bounds in --help are the ones predict applies, not typed twice.
    for name, value in (("{review}", MAX_REVIEW_BYTES), ("{input}", MAX_INPUT_BYTES >> 20),
                        ("{reviews}", MAX_REVIEWS)):  # fmt: skip
        run.__doc__ = (run.__doc__ or "").replace(name, str(value))
    return run


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer.predict`."""
    return run_fire(None, argv, "trainer.predict", positional=_command)


if __name__ == "__main__":
    raise SystemExit(main())
