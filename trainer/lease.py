"""One trainer per run: a lease object in the run's store, taken and renewed by
compare-and-swap, released at the end; a killed trainer's lease is taken over once it expires.

Two trainers on one run id would otherwise both train and publish a run mixing their
artifacts. The store's conditional writes (GCS generations, a lock and rename locally) make
taking the lease atomic; renewal from a background thread keeps a live trainer's lease fresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from trainer import contract
from trainer.numbers import bounded_float
from trainer.storage import Store, StoreError
from trainer.termination import RetryableError

DEFAULT_SECONDS = 60.0
MAX_SECONDS = 86_400.0  # a day: beyond it a killed trainer holds the run for good
# A foreign lease's time is seconds since the epoch; up to the year 5138, not 1e308 or nan
# (time.gmtime and the comparisons below would raise or never expire).
_MAX_EXPIRES = 1e11


class LeaseHeldError(Exception):
    """Another live trainer holds the run's lease (retryable: exit 75)."""


class LeaseLostError(RetryableError):
    """The run's lease was taken by another trainer or could no longer be renewed: this
    trainer stops before publishing (exit 75); the rerun waits for or takes the lease."""


def lease_seconds() -> float:
    raw = os.environ.get(contract.LEASE_SECONDS_ENV, "").strip()
    if not raw:
        return DEFAULT_SECONDS
    from trainer.config import ConfigError

    # inf or 1e308 would kill the renewal thread (OverflowError in Event.wait) while
    # training went on unheld.
    return bounded_float(raw, contract.LEASE_SECONDS_ENV, 0.1, MAX_SECONDS, ConfigError)


class Lease:
    """The lease on one run (`<run>/_LEASE`): {"owner", "expires"} in seconds since the epoch."""

    def __init__(self, store: Store, seconds: float | None = None, log: Callable = print):
        self.store = store
        self.seconds = lease_seconds() if seconds is None else seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.log = log
        self.version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = threading.Event()
        self.lost_why = ""

    def _read(self) -> tuple[dict | None, str | None]:
        raw, version = self.store.read_versioned(contract.LEASE)
        if raw is None:
            return None, None
        try:
            doc = json.loads(raw)
            expires = bounded_float(doc["expires"], "lease time", 0.0, _MAX_EXPIRES)
            doc = {"owner": str(doc["owner"])[:200], "expires": expires}
        except (ValueError, KeyError, TypeError, RecursionError):
            doc = {"owner": "<unreadable lease>", "expires": 0.0}  # take it over
        return doc, version

    def _write(self, version: str | None) -> bool:
        doc = {"owner": self.owner, "expires": time.time() + self.seconds}
        ok = self.store.write_versioned(contract.LEASE, json.dumps(doc).encode(), version)
        if ok:
            self.version = self.store.read_versioned(contract.LEASE)[1]
        return ok

    def acquire(self) -> None:
        """Take the lease, waiting at most one lifetime for a silent holder's to expire.

        Raises:
            LeaseHeldError: a live holder renewed its lease meanwhile, or won the race.
        """
        deadline = time.time() + self.seconds + 1
        while True:
            current, version = self._read()
            now = time.time()
            expired = current is None or float(current["expires"]) <= now
            if expired:
                if current is not None:
                    self.log(f"taking over the expired lease of {current['owner']}")
                if self._write(version):
                    self._start_renewal()
                    return
            elif now >= deadline:
                raise LeaseHeldError(
                    f"run {self.store.uri} is being trained by {current['owner']} (lease "
                    f"renewed until {time.strftime('%H:%M:%S', time.gmtime(current['expires']))}"
                    " UTC); wait for it to finish, or pass another --run-id"
                )
            time.sleep(min(1.0, max(0.05, self.seconds / 20)))

    def _start_renewal(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        # The thread keeps the guarantee of one trainer per run: whatever ends it marks the
        # lease lost, which `check` turns into a stop before publishing, never a silent end.
        try:
            while not self._stop.wait(self.seconds / 3):
                try:
                    if not self._write(self.version):
                        self._lose("the run's lease was taken by another trainer")
                        return
                except StoreError:
                    continue  # a blip: the next renewal may succeed before expiry
        except BaseException as e:
            self._lose(f"the lease renewal stopped ({type(e).__name__}: {e})")

    def _lose(self, why: str) -> None:
        self.lost_why = why
        self.lost.set()
        self.log(f"warning: {why}")

    def check(self) -> None:
        """Raises LeaseLostError when the lease is no longer held (taken, or not renewed)."""
        if self.lost.is_set():
            raise LeaseLostError(
                f"{self.lost_why}: run {self.store.uri} is no longer held by this trainer, so "
                "it stops before publishing; rerun with the same --run-id to resume"
            )

    def release(self) -> None:
        """Stop renewing and let the lease expire now (only if it is still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.version is None or self.lost.is_set():
            return
        doc = {"owner": self.owner, "expires": 0.0}
        with contextlib.suppress(StoreError):  # it expires on its own
            self.store.write_versioned(contract.LEASE, json.dumps(doc).encode(), self.version)
