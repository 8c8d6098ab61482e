"""A lease lock on S3: ``ROOT/<name>`` exists while someone holds the lock.

Taking the lock is a conditional create (``If-None-Match: *``) of a small JSON object naming its owner and
lease; only one of any number of racing writers succeeds. The holder renews the lease in a background thread
by rewriting the object conditional on its own ETag (so a renewal never overwrites a new owner), and deletes it
on release, again conditional on its ETag. An owner that died stops renewing: once the object is older than
its lease by the server's clock (the ``Date`` and ``Last-Modified`` headers, so no two machines' clocks are
compared), a waiter replaces it conditional on the ETag it saw, so of several waiters exactly one takes over.
Waits are bounded: :class:`LockTimeout` names the lock and its holder.

Local roots lock with ``flock`` (:func:`storage.manifest.manifest_lock`); other filesystems (``memory://``)
have no cross-process lock, which :func:`supports_locking` reports.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import fsspec

from storage import s3
from storage.fs import is_local, join, resolve


log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 30.0
"""How long a lock outlives its holder's last renewal; the holder renews every third of it."""
CLOCK_RESOLUTION_S = 1.0
"""HTTP dates count whole seconds: an object is surely older than its lease only one second later."""
MAX_POLL_S = 1.0
RELEASE_ATTEMPTS = 5


class LockTimeout(TimeoutError):
    """The lock was not free within the caller's deadline."""


class ObjectLock:
    """One acquisition of the lock object ``path`` (use :func:`object_lock`)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, lease_s: float) -> None:
        if lease_s < 3 * CLOCK_RESOLUTION_S:
            raise ValueError(f"lease_s must be at least {3 * CLOCK_RESOLUTION_S:.0f} s, got {lease_s}")
        self.fs = fs
        self.path = path
        self.lease_s = float(lease_s)
        self.owner = uuid.uuid4().hex
        self.lost = False
        self._etag: str | None = None
        self._renewals = 0
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _body(self) -> bytes:
        record = {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "lease_s": self.lease_s,
            "renewals": self._renewals,
            "renewed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return (json.dumps(record) + "\n").encode()

    def acquire(self, timeout_s: float | None) -> None:
        """Take the lock, waiting at most ``timeout_s`` seconds (None: forever)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pause = 0.05
        while True:
            holder = self._try_take()
            if holder is None:
                self._start_heartbeat()
                return
            if deadline is not None and time.monotonic() >= deadline:
                where = self.fs.unstrip_protocol(self.path)
                raise LockTimeout(f"lock {where} still held after {timeout_s:.0f}s by {holder}")
            wait = pause * random.uniform(0.5, 1.0)
            time.sleep(wait if deadline is None else max(0.0, min(wait, deadline - time.monotonic())))
            pause = min(pause * 1.5, MAX_POLL_S)

    def _try_take(self) -> str | None:
        """One attempt; None when the lock is now ours, else a description of its holder."""
        try:
            self._etag = s3.put(self.fs, self.path, self._body(), if_absent=True)
            return None
        except s3.PreconditionFailed:
            pass
        current = s3.get(self.fs, self.path)
        if current is None:  # released in between: try again at once
            return self._try_take_released()
        record = _parse(current.data)
        if record.get("owner") == self.owner:  # our create went through but its response was lost
            self._etag = current.etag
            return None
        lease_s = _number(record.get("lease_s"), default=self.lease_s)
        age_s = (current.server_time - current.last_modified).total_seconds() - CLOCK_RESOLUTION_S
        holder = _describe(record, age_s, lease_s)
        if age_s < lease_s:
            return holder
        try:
            self._etag = s3.put(self.fs, self.path, self._body(), if_match=current.etag)
        except s3.PreconditionFailed:
            return holder  # another waiter took it over first, or its owner renewed or released it
        log.warning("took over %s from %s", self.path, holder)
        return None

    def _try_take_released(self) -> str | None:
        try:
            self._etag = s3.put(self.fs, self.path, self._body(), if_absent=True)
            return None
        except s3.PreconditionFailed:
            return "another writer (it was just taken)"

    def _start_heartbeat(self) -> None:
        self._heartbeat = threading.Thread(target=self._renew_until_released, name=f"lease {self.path}", daemon=True)
        self._heartbeat.start()

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            with self._guard:
                if self._stop.is_set():
                    return
                self._renewals += 1
                try:
                    self._etag = s3.put(self.fs, self.path, self._body(), if_match=self._etag)
                except (s3.ConditionalConflict, OSError) as exc:  # transient: the next renewal is still in time
                    log.warning("could not renew the lease of %s: %s", self.path, exc)
                    self._adopt_if_ours()
                except s3.PreconditionFailed:
                    self.lost = True
                    log.error("lost the lock %s: another writer took it over (was this process stalled?)", self.path)
                    return

    def _adopt_if_ours(self) -> None:
        """After a renewal with an unknown outcome: if it went through, continue from its ETag."""
        try:
            current = s3.get(self.fs, self.path)
        except OSError:
            return
        if current is not None and _parse(current.data).get("owner") == self.owner:
            self._etag = current.etag

    def release(self) -> None:
        """Stop renewing and delete the lock object if it is still ours."""
        with self._guard:
            self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self.lost or self._etag is None:
            return
        for attempt in range(RELEASE_ATTEMPTS):
            try:
                s3.delete(self.fs, self.path, if_match=self._etag)
                return
            except s3.ConditionalConflict:
                time.sleep(0.1 * (attempt + 1))
            except s3.PreconditionFailed:
                self.lost = True
                log.error("lock %s was taken over before its release: its lease had expired", self.path)
                return
        log.warning("could not release %s (conflicting requests): it expires after its lease", self.path)


def _parse(data: bytes) -> dict:
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _number(value: object, default: float) -> float:
    """A positive number read from a lock object, else ``default`` (a damaged object is judged by our lease)."""
    return float(value) if isinstance(value, int | float) and value > 0 else default


def _describe(record: dict, age_s: float, lease_s: float) -> str:
    who = f"pid {record.get('pid', '?')} on {record.get('host', '?')}" if record else "an unreadable lock object"
    return f"{who} (lease {lease_s:.0f}s, last renewed {max(age_s, 0.0):.0f}s ago)"


@contextmanager
def object_lock(
    root: str,
    name: str,
    timeout_s: float | None = None,
    lease_s: float = DEFAULT_LEASE_S,
) -> Iterator[ObjectLock]:
    """Hold the lock object ``ROOT/<name>`` on an S3 root for the duration of the block.

    ``timeout_s`` bounds the wait (None: wait as long as a live holder keeps it); ``lease_s`` is how long the
    lock survives this process if it dies without releasing it.
    """
    fs, base = resolve(root)
    if not s3.is_s3(fs):
        raise ValueError(f"object locks need an s3:// root, not {root!r}")
    lock = ObjectLock(fs, join(base, name), lease_s)
    lock.acquire(timeout_s)
    try:
        yield lock
    finally:
        lock.release()


_SUPPORT: dict[str, bool] = {}
_SUPPORT_GUARD = threading.Lock()


def supports_locking(root: str) -> bool:
    """Whether writers in several processes can lock ``root``: local disks (``flock``) and S3 buckets that honour
    conditional writes (checked once per bucket by creating a probe object twice). False elsewhere."""
    fs, base = resolve(root)
    if is_local(fs):
        return True
    if not s3.is_s3(fs):
        return False
    bucket = base.split("/", 1)[0]
    key = f"{getattr(fs, 'endpoint_url', None) or os.environ.get('AWS_ENDPOINT_URL', '')}|{bucket}"
    with _SUPPORT_GUARD:
        if key not in _SUPPORT:
            _SUPPORT[key] = _probe_conditional_writes(fs, join(base, f".lock-probe-{uuid.uuid4().hex}"))
        return _SUPPORT[key]


def _probe_conditional_writes(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    try:
        s3.put(fs, path, b"probe", if_absent=True)
        try:
            s3.put(fs, path, b"again", if_absent=True)
        except s3.PreconditionFailed:
            return True
    except OSError as exc:
        if s3.error_code(exc) != "NotImplemented":
            raise
    finally:
        if fs.exists(path):
            fs.rm(path)
    log.warning("%s ignores conditional writes (If-None-Match): no cross-process locks there", path)
    return False
