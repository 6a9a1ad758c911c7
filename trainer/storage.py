"""Run stores: a local directory or a gs:// bucket prefix behind one small interface.

This module must not import TensorFlow: the submit side (jobs/) reads results with it.
TensorFlow's own gs:// filesystem is deliberately not used; bytes move through
google-cloud-storage so that the same code runs against a GCS emulator
(STORAGE_EMULATOR_HOST) and gets generation preconditions for compare-and-swap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol
from uuid import uuid4

from trainer import contract
from trainer.contract import KnownError
from trainer.numbers import bounded_float

# https://cloud.google.com/storage/docs/buckets#naming (dotted names aside, 3-63 chars).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$")


# Seconds a store keeps asking for credentials at start-up (bounded by its deadline).
AUTH_RETRY_SECONDS = 30.0


class StoreError(KnownError):
    """A store operation failed in a way the user must act on: a store that does not exist
    or refuses us (retrying cannot help)."""

    store_refusal = True


class StoreUnavailableError(StoreError):
    """The store could not be reached, or answered with a transient error (5xx, 429, no
    credentials yet), after the bounded retries: an outage, resumable at every phase of a
    run (exit 75), never bad input. Only a store that answers "no such bucket" or
    "forbidden" is a permanent error."""

    exit_code, resumable, store_refusal = contract.EXIT_PREEMPTED, True, False


class StoreContentError(KnownError, ValueError):
    """What the store holds is not what this project wrote (a damaged or foreign file) or
    not there (no such run, an incomplete one): bad input, exit 2, for every command that
    reads it (the trainer, predict, serving, jobs.results), never 1 in one and 2 in another."""


class DamagedKeyError(StoreError, StoreContentError):
    """A key held by something that is not an object we wrote (a directory): store content,
    so exit 2 from every command, not a refusal of the store."""

    store_refusal = False


class NotFoundError(StoreError):
    """The key does not exist."""


class AlreadyExistsError(StoreError):
    """A create-only write found the key already there."""


class Store(Protocol):
    """What the trainer and the results tools need from a place that keeps runs."""

    uri: str

    def child(self, *parts: str) -> Store: ...
    def check_writable(self) -> None: ...
    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def upload_file(self, local: Path, key: str) -> None: ...
    def download_file(self, key: str, local: Path) -> None: ...
    def version(self, key: str) -> str: ...
    def remove_stray_temp(self) -> int: ...
    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]: ...
    def write_versioned(self, key: str, data: bytes, version: str | None) -> bool: ...


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _check_parts(uri: str, parts: tuple[str, ...]) -> None:
    """Refuse path segments that would leave the store ('..') or alias it ('.')."""
    for part in parts:
        if any(seg in (".", "..") for seg in str(part).split("/")):
            raise StoreError(
                f"invalid store path {part!r} under {uri}: '.' and '..' segments are not allowed"
            )


def _umask() -> int:
    # Read, not set: os.umask() can only be queried by changing it, which races with
    # other threads creating files.
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def write_new_file(directory: Path, name: str, data: bytes | Callable[[BinaryIO], object]) -> Path:
    """Write `data` to a fresh, uniquely named temp file in `directory`, mode 0666 & ~umask.

    `data` is the bytes, or a function that writes them to the open file (a large file
    streamed from its parts, never whole in memory).

    The caller renames it into place (atomic publish) and removes it on failure; this
    function removes it itself when the write fails (e.g. ENOSPC), so no partial temp
    file is ever left behind.
    """
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        try:
            # mkstemp creates 0600; artifacts are shared like any other file.
            os.fchmod(fd, 0o666 & ~_umask())
            if callable(data):
                with os.fdopen(fd, "wb", closefd=False) as f:
                    data(f)
            else:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def replace_file(path: Path, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Publish `data` at `path` through a new temp file and an atomic rename: a reader sees
    the old file or the new one, never part of one, and the temp file never outlives the
    call (a concurrent writer has its own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_new_file(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def upload_tree(store: Store, local: Path, prefix: str) -> None:
    """Every file under `local` to `prefix/<relative path>` in the store."""
    if not local.exists():
        return
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        store.upload_file(path, f"{prefix}/{path.relative_to(local).as_posix()}")


def _os_reason(e: OSError) -> str:
    return e.strerror or str(e)


class LocalStore:
    """A directory on the local filesystem; writes are atomic renames."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({self.uri!r})"

    def child(self, *parts: str) -> LocalStore:
        _check_parts(self.uri, parts)
        if any(Path(p).is_absolute() for p in parts if p):
            raise StoreError(f"invalid store path {parts!r} under {self.uri}: must be relative")
        return LocalStore(self.root.joinpath(*[p for p in parts if p]))

    def check_writable(self) -> None:
        """Fail now, with the reason, if runs cannot be written here (nothing is left behind)."""
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            if existing.is_symlink():  # exists() is False through a loop or a lost target
                raise StoreError(
                    f"cannot write to {self.uri}: {existing} is a symbolic link that leads "
                    "nowhere (a loop, or a missing target)"
                )
            existing = existing.parent
        if not existing.is_dir():
            raise StoreError(f"cannot write to {self.uri}: {existing} is not a directory")
        try:
            # A real write, not os.access(): root passes access() on read-only mounts.
            write_new_file(existing, "write-probe", b"").unlink()
        except OSError as e:
            raise StoreError(f"cannot write to {self.uri}: {_os_reason(e)} ({existing})") from e

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve() if key else self.root
        if path != self.root.resolve() and self.root.resolve() not in path.parents:
            raise StoreError(f"key {key!r} escapes the store {self.uri}")
        return path

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except IsADirectoryError:
            # Not absent: something else holds the name, and writing it would fail too.
            raise DamagedKeyError(
                f"{self.uri}/{key} is a directory, not a file: remove or rename it"
            ) from None
        except (FileNotFoundError, NotADirectoryError) as e:
            raise NotFoundError(f"{self.uri}/{key} does not exist") from e

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = write_new_file(path.parent, path.name, data)
        except OSError as e:
            # Disk full, read-only, a file where a directory should be: one line, and the
            # previous version of the key (if any) is untouched.
            raise StoreError(f"cannot write {self.uri}/{key}: {_os_reason(e)}") from e
        try:
            if if_absent:
                # link() fails if the target exists: an atomic create-only publish.
                try:
                    os.link(tmp, path)
                except FileExistsError as e:
                    raise AlreadyExistsError(f"{self.uri}/{key} already exists") from e
            else:
                os.replace(tmp, path)
        except OSError as e:
            raise StoreError(f"cannot write {self.uri}/{key}: {_os_reason(e)}") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        out = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                out.append(path.relative_to(self.root).as_posix())
        return sorted(out)

    def delete_prefix(self, prefix: str) -> int:
        path = self._path(prefix)
        if path.is_file():
            path.unlink()
            return 1
        if not path.is_dir():
            return 0
        count = sum(1 for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path)
        return count

    def upload_file(self, local: Path, key: str) -> None:
        self.write_bytes(key, Path(local).read_bytes())

    def remove_stray_temp(self) -> int:
        """Delete the temp files (write_new_file's `.NAME.*.tmp`) a killed writer left in
        this store; call only while holding the run's lease (whose own renewals are left
        alone). Returns how many."""
        removed = 0
        if self.root.is_dir():
            for path in self.root.rglob(".*.tmp"):
                if path.name.startswith(f".{contract.LEASE}."):
                    continue
                if path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def version(self, key: str) -> str:
        """What changes when the object is replaced: its size and modification time."""
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            raise NotFoundError(f"{self.uri}/{key} does not exist") from None
        return f"{st.st_size}-{st.st_mtime_ns}"

    def download_file(self, key: str, local: Path) -> None:
        replace_file(Path(local), self.read_bytes(key))

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        try:
            data = self.read_bytes(key)
        except NotFoundError:
            return None, None
        return data, hashlib.sha256(data).hexdigest()

    def write_versioned(self, key: str, data: bytes, version: str | None) -> bool:
        """Compare-and-swap: write only if the key is still at `version` (None: absent)."""
        with self._lock(key):
            _, current = self.read_versioned(key)
            if current != version:
                return False
            self.write_bytes(key, data)
            return True


class GCSStore:
    """A gs://bucket/prefix through google-cloud-storage (honours STORAGE_EMULATOR_HOST)."""

    def __init__(
        self, bucket: str, prefix: str = "", *, client=None, deadline: float | None = None
    ):
        _check_bucket(bucket)
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"gs://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self._client = client
        self.deadline = gcs_deadline() if deadline is None else float(deadline)

    def __repr__(self) -> str:
        return f"GCSStore({self.uri!r})"

    @property
    def client(self):
        if self._client is None:
            from google.cloud import storage

            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                # An emulator takes any token; with a metadata server named (GKE's, or a
                # test's), credentials come from it as they do in a pod.
                if os.environ.get("GCE_METADATA_HOST"):
                    import google.auth

                    credentials = google.auth.default()[0]
                else:
                    credentials = AnonymousCredentials()
                self._client = storage.Client(
                    project=os.environ.get("GOOGLE_CLOUD_PROJECT", "imdb-train"),
                    credentials=credentials,
                )
            else:
                self._client = storage.Client()
        return self._client

    @property
    def bucket(self):
        return self.client.bucket(self.bucket_name)

    def _retry(self):
        from google.cloud.storage.retry import DEFAULT_RETRY

        # Bounded: an unreachable store ends in an error, not a hang.
        return DEFAULT_RETRY.with_deadline(self.deadline).with_delay(
            initial=0.2, maximum=5.0, multiplier=2.0
        )

    def _timeout(self) -> float:
        """Each HTTP request's connect and read timeout: within the deadline, so a store that
        accepts connections and never answers is given up on in about the deadline (the
        client's default of 60 s a request, times its retries, took minutes)."""
        return min(60.0, self.deadline)

    def _bounds(self) -> dict:
        """What bounds every call to the client: its retries and each request's timeout."""
        return {"retry": self._retry(), "timeout": self._timeout()}

    def _name(self, key: str) -> str:
        return _join(self.prefix, key)

    def child(self, *parts: str) -> GCSStore:
        _check_parts(self.uri, parts)
        return GCSStore(
            self.bucket_name,
            _join(self.prefix, *parts),
            client=self._client,
            deadline=self.deadline,
        )

    def check_writable(self) -> None:
        """Fail now, with the reason, if runs cannot be written here: a probe object is
        written and deleted (a missing bucket is a 404 on upload, permanent).

        Credentials that cannot be had are retried with a bounded backoff first: on GKE the
        metadata server may not answer in a pod's first seconds (Workload Identity).
        """
        from google.auth import exceptions as auth_exc

        deadline = time.monotonic() + min(self.deadline, AUTH_RETRY_SECONDS)
        delay = 0.5
        while True:
            try:
                return self._probe_write()
            except auth_exc.GoogleAuthError as e:
                if time.monotonic() + delay > deadline:
                    reason = " ".join(str(e).split())[:200]
                    raise StoreUnavailableError(
                        f"cannot get Google credentials for {self.uri} ({type(e).__name__}: "
                        f"{reason}); on GKE, Workload Identity needs the cluster's workload "
                        "pool and the node pool's GKE metadata server, then either the "
                        "Kubernetes ServiceAccount itself granted the bucket role as the "
                        "principal principal://iam.googleapis.com/projects/PROJECT_NUMBER/"
                        "locations/global/workloadIdentityPools/PROJECT.svc.id.goog/subject/"
                        "ns/NAMESPACE/sa/SERVICE_ACCOUNT, or the ServiceAccount annotated "
                        "with iam.gke.io/gcp-service-account and roles/iam.workloadIdentityUser "
                        "for it on that Google service account (docs/kubernetes.md)"
                    ) from e
                self._client = None  # new credentials on the next attempt
                time.sleep(delay)
                delay = min(delay * 2, 8.0)

    def _probe_write(self) -> None:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc

        key = f".write-probe-{uuid4().hex}"
        blob = self.bucket.blob(self._name(key))
        try:
            blob.upload_from_string(b"", if_generation_match=0, **self._bounds())
        except gexc.NotFound as e:
            raise StoreError(
                f"cannot write to {self.uri}: bucket not found: gs://{self.bucket_name}"
            ) from e
        except gexc.Forbidden as e:
            raise StoreError(f"cannot write to {self.uri}: permission denied ({e.message})") from e
        except auth_exc.GoogleAuthError:
            raise
        except Exception as e:
            raise self._wrap("write", key, e) from e
        with contextlib.suppress(Exception):
            blob.delete(**self._bounds())

    def _wrap(self, op: str, key: str, e: Exception) -> Exception:
        from google.api_core import exceptions as gexc

        from trainer.termination import RetryableError

        if isinstance(e, RetryableError):
            return e  # a signal (preemption) mid-call is never a store error
        where = f"gs://{self.bucket_name}/{self._name(key)}"
        if isinstance(e, gexc.NotFound):
            return NotFoundError(f"{where} does not exist")
        if isinstance(e, gexc.PreconditionFailed):
            return AlreadyExistsError(f"{where} already exists")
        transient = (gexc.ServerError, gexc.TooManyRequests)
        if isinstance(e, (gexc.RetryError, *transient)) or _is_connection_error(e):
            return StoreUnavailableError(
                f"cannot reach {where} (gave up after {self.deadline:g} s of retries): {e}"
            )
        if isinstance(e, gexc.Forbidden):
            return StoreError(f"{op} {where}: permission denied ({e.message})")
        return StoreError(f"{op} {where} failed: {type(e).__name__}: {e}")

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.bucket.blob(self._name(key)).download_as_bytes(**self._bounds())
        except Exception as e:
            raise self._wrap("read", key, e) from e

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if if_absent:
            if not self._conditional_upload(key, data, 0):
                raise AlreadyExistsError(
                    f"gs://{self.bucket_name}/{self._name(key)} already exists"
                )
            return
        try:
            self.bucket.blob(self._name(key)).upload_from_string(data, **self._bounds())
        except Exception as e:
            raise self._wrap("write", key, e) from e

    def _conditional_upload(self, key: str, data: bytes, generation: int) -> bool:
        """Upload only if the object is at `generation` (0: absent); False if it is not.

        Retries transient faults itself rather than through the client, to know whether
        an earlier attempt may have landed: only then does a 412 mean "check whether the
        object now holds our bytes" rather than "somebody else won".
        """
        from google.api_core import exceptions as gexc
        from google.cloud.storage.retry import _should_retry

        blob = self.bucket.blob(self._name(key))
        give_up = time.monotonic() + self.deadline
        delay, attempted = 0.2, False
        while True:
            try:
                blob.upload_from_string(data, if_generation_match=generation, retry=None)
                return True
            except gexc.PreconditionFailed:
                if attempted:
                    current, _ = self.read_versioned(key)
                    return current == data
                return False
            except Exception as e:
                if not _should_retry(e) or time.monotonic() + delay > give_up:
                    raise self._wrap("write", key, e) from e
                attempted = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def exists(self, key: str) -> bool:
        try:
            return self.bucket.blob(self._name(key)).exists(**self._bounds())
        except Exception as e:
            raise self._wrap("stat", key, e) from e

    def list(self, prefix: str = "") -> list[str]:
        full = self._name(prefix)
        if full:
            full = full + ("/" if prefix == "" or not prefix.endswith("/") else "")
        try:
            names = [
                b.name
                for b in self.client.list_blobs(
                    self.bucket_name,
                    prefix=full or None,
                    **self._bounds(),
                )
            ]
        except Exception as e:
            raise self._wrap("list", prefix, e) from e
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(n[strip:] for n in names)

    def delete_prefix(self, prefix: str) -> int:
        # As the local store: the object named `prefix` itself, and everything under
        # `prefix/` (never a sibling whose name merely starts with it).
        keys = self.list(prefix)
        if prefix.strip("/") and not prefix.endswith("/") and self.exists(prefix):
            keys.append(prefix)
        for key in keys:
            try:
                self.bucket.blob(self._name(key)).delete(**self._bounds())
            except Exception as e:
                err = self._wrap("delete", key, e)
                if not isinstance(err, NotFoundError):
                    raise err from e
        return len(keys)

    def upload_file(self, local: Path, key: str) -> None:
        try:
            self.bucket.blob(self._name(key)).upload_from_filename(str(local), **self._bounds())
        except Exception as e:
            raise self._wrap("upload", key, e) from e

    def download_file(self, key: str, local: Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.part")
        try:
            self.bucket.blob(self._name(key)).download_to_filename(str(tmp), **self._bounds())
        except Exception as e:
            tmp.unlink(missing_ok=True)
            raise self._wrap("download", key, e) from e
        os.replace(tmp, local)

    def remove_stray_temp(self) -> int:
        return 0  # an object appears whole or not at all: nothing half-written to remove

    def version(self, key: str) -> str:
        """The object's generation: a new one whenever the object is replaced."""
        blob = self.bucket.blob(self._name(key))
        try:
            blob.reload(**self._bounds())
        except Exception as e:
            raise self._wrap("stat", key, e) from e
        return str(blob.generation)

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        from google.api_core import exceptions as gexc

        blob = self.bucket.blob(self._name(key))
        try:
            blob.reload(**self._bounds())
            generation = blob.generation
            data = blob.download_as_bytes(if_generation_match=generation, **self._bounds())
        except gexc.NotFound:
            return None, None
        except gexc.PreconditionFailed:
            # Replaced between stat and read: read again.
            return self.read_versioned(key)
        except Exception as e:
            raise self._wrap("read", key, e) from e
        return data, str(generation)

    def write_versioned(self, key: str, data: bytes, version: str | None) -> bool:
        """Compare-and-swap on the object generation (None: the object must not exist)."""
        return self._conditional_upload(key, data, 0 if version is None else int(version))


def gcs_deadline() -> float:
    """IMDB_TRAIN_GCS_DEADLINE: seconds of retries for one store call (default 120)."""
    text = os.environ.get(contract.GCS_DEADLINE_ENV, "120")
    try:  # float() alone takes Unicode digits ('٣') and 'inf'
        value = bounded_float(text, contract.GCS_DEADLINE_ENV, 0.0, 86_400.0)
    except ValueError:
        value = 0.0
    if not 0 < value < 86_400:
        raise StoreError(
            f"invalid {contract.GCS_DEADLINE_ENV} {text!r}: expected seconds, a number "
            "above 0 and below 86400"
        )
    return value


def _is_connection_error(e: BaseException) -> bool:
    import requests

    return isinstance(e, requests.exceptions.ConnectionError | ConnectionError)


def _check_bucket(bucket: str) -> None:
    if not _BUCKET_RE.match(bucket) or ".." in bucket or bucket.startswith("goog"):
        raise StoreError(
            f"invalid bucket name {bucket!r}: expected 3-63 characters of a-z, 0-9, '-', '_', '.',"
            " starting and ending with a letter or digit"
        )


def open_store(uri: str | os.PathLike[str] | None = None) -> Store:
    """Open a store from a URI.

    Args:
        uri: a local path, `file:///abs/path`, or `gs://bucket[/prefix]`. Defaults to ./runs.

    Returns:
        A LocalStore or GCSStore.

    Raises:
        StoreError: the scheme is unknown or the bucket name is invalid.
    """
    uri = str(uri) if uri is not None else contract.default_output()
    if not uri:
        raise StoreError("empty output URI: expected a local path, file:// or gs://bucket/prefix")
    if uri.startswith("gs://"):
        rest = uri[len("gs://") :]
        bucket, _, prefix = rest.partition("/")
        _check_parts(uri, (prefix,))
        return GCSStore(bucket, prefix)
    if uri.startswith("file://"):
        # RFC 8089: file:///abs/path or file://localhost/abs/path. "file://runs" names a
        # host, not the relative directory "runs"; refuse rather than guess.
        host, slash, path = uri[len("file://") :].partition("/")
        if host not in ("", "localhost") or not slash:
            raise StoreError(
                f"invalid file URI {uri!r}: expected file:///absolute/path (no host; for a"
                " relative directory pass the path itself)"
            )
        return LocalStore("/" + path)
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", uri)
    if match:
        raise StoreError(
            f"unknown output scheme {match.group(1)!r} in {uri!r}: expected a local path,"
            " file:// or gs://bucket/prefix"
        )
    return LocalStore(uri)
