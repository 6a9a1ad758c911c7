"""Where the data comes from: 'keras' (downloaded, verified), a path, file:// or gs://."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from trainer.data.common import DataError, progress, sha256_file
from trainer.numbers import bounded_int
from trainer.termination import RetryableError

KERAS_NPZ_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"


KERAS_NPZ_SHA256 = "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"


KERAS_WORD_INDEX_URL = (
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb_word_index.json"
)


class DownloadUnavailableError(RetryableError):
    """The data's server could not be reached or stopped answering (DNS, refused, timeout,
    reset, 5xx, 429): an outage, exit 75, and the Job retries; never bad input."""


# HTTP answers that say the data does not exist or is not ours to read: bad input (exit 2).
# Every other answer (5xx, 408, 429, ...) is the server's trouble: an outage.
_PERMANENT_HTTP = frozenset({400, 401, 403, 404, 405, 410, 414, 451})


def _download_failure(url: str, e: BaseException) -> Exception:
    """The error a failed download becomes: DataError when the answer says the data is not
    there, DownloadUnavailableError when no answer came (the class of the failure, not its
    message, decides)."""
    if isinstance(e, urllib.error.HTTPError):
        if e.code in _PERMANENT_HTTP:
            return DataError(f"cannot download {url}: HTTP {e.code} {e.reason}")
        return DownloadUnavailableError(
            f"cannot download {url}: HTTP {e.code} {e.reason} (the server's trouble); "
            "the run is retried"
        )
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, ValueError) and not isinstance(reason, OSError):
        return DataError(f"cannot download {url}: {reason}")  # a malformed URL
    if isinstance(reason, OSError | http.client.HTTPException | socket.timeout):
        # DNS (socket.gaierror), refused, reset, timed out, a connection closed mid-answer.
        return DownloadUnavailableError(
            f"cannot download {url}: {getattr(reason, 'strerror', None) or reason} "
            f"({type(reason).__name__}): a network outage; the run is retried"
        )
    return DataError(f"cannot download {url}: {reason}")


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60) -> Path:
    """Download `url` to `dest` (atomically, with progress), verifying sha256 if given.

    Raises:
        DataError: the server says the data is not there (404, 403, ...) or its sha256
            does not match: bad input.
        DownloadUnavailableError: no answer (DNS, refused, timeout, reset, 5xx): an outage.
    """
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
            try:  # a header is the server's text: bounded, and only a hint for the bar
                total = bounded_int(resp.headers.get("Content-Length"), "length", 1, 1 << 50)
            except ValueError:
                total = None
            got_bytes = 0
            with progress(total, f"download {dest.name}", "B", unit_scale=True) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    got_bytes += len(chunk)
                    bar.update(len(chunk))
        # http.client ends a body cut short by a closed connection quietly; its checksum
        # would then call an outage bad data.
        if total is not None and got_bytes < total:
            raise DownloadUnavailableError(
                f"cannot download {url}: the connection closed after {got_bytes} of {total} "
                "bytes: a network outage; the run is retried"
            )
        if sha256 and (got := sha256_file(Path(tmp))) != sha256:
            raise DataError(f"download of {url} has sha256 {got}: expected {sha256}")
        os.replace(tmp, dest)
    except (OSError, http.client.HTTPException, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise _download_failure(url, e) from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dest


def resolve_source(source: str, cache_dir: Path) -> Path:
    """Turn 'keras', a gs:// URI or a path into a local file or directory."""
    if source == "keras":
        return download(KERAS_NPZ_URL, cache_dir / "downloads" / "imdb.npz", KERAS_NPZ_SHA256)
    if source.startswith("gs://"):
        from trainer.storage import StoreError, StoreUnavailableError, open_store

        parent, _, name = source[len("gs://") :].rstrip("/").rpartition("/")
        if not name or not parent:
            raise DataError(f"invalid data URI {source!r}: expected gs://bucket/path/to/file")
        key = hashlib.sha256(source.encode()).hexdigest()[:16]
        try:
            store = open_store("gs://" + parent)
            # Keyed by the object's generation, not only its name: an object replaced under
            # the same name is downloaded again, never read stale from the cache.
            local = cache_dir / "downloads" / key / store.version(name) / name
            if not local.exists():
                store.download_file(name, local)
            if name.endswith(".npz"):
                with contextlib.suppress(StoreError):
                    store.download_file(
                        "imdb_word_index.json", local.with_name("imdb_word_index.json")
                    )
        except StoreUnavailableError:
            raise  # an outage, not bad data: the run is resumable (exit 75)
        except StoreError as e:
            raise DataError(f"cannot read data source {source}: {e}") from e
        return local
    path = Path(source[len("file://") :] if source.startswith("file://") else source)
    if not source.strip() or not path.exists():
        raise DataError(
            f"data source {source!r} does not exist: expected 'keras', a path to imdb.npz, "
            "an aclImdb tarball or directory, or a gs:// URI"
        )
    if not (path.is_file() or path.is_dir()):  # a FIFO or a device would block or never end
        raise DataError(
            f"data source {source!r} is not a regular file or a directory: expected "
            "imdb.npz, an aclImdb tarball or directory"
        )
    return path
