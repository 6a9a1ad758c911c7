"""Where the data comes from: 'keras' (downloaded, verified), a path, file:// or gs://."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from trainer.data.common import DataError, progress, sha256_file

KERAS_NPZ_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"


KERAS_NPZ_SHA256 = "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"


KERAS_WORD_INDEX_URL = (
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb_word_index.json"
)


def download(url: str, dest: Path, sha256: str | None = None) -> Path:
    """Download `url` to `dest` (atomically, with progress), verifying sha256 if given."""
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress(total, f"download {dest.name}", "B", unit_scale=True) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        if sha256 and (got := sha256_file(Path(tmp))) != sha256:
            raise DataError(f"download of {url} has sha256 {got}: expected {sha256}")
        os.replace(tmp, dest)
    except OSError as e:
        raise DataError(f"cannot download {url}: {e}") from e
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
