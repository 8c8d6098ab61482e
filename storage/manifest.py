"""The per-dataset ``manifest.json``: the single source of truth for which shards are complete.

A shard counts as done only when the manifest lists it with a matching checksum and config hash;
the mere presence of a file means nothing. The manifest is rewritten atomically under a lock
(a file lock on local disks, a lease lock object on S3, :mod:`storage.object_lock`; a process lock everywhere),
so concurrent shard tasks can commit. On S3 the rewrite is also conditional on the ETag read under the lock, so a
writer whose lease expired while it stalled fails instead of overwriting another's commit.

The commit protocol, the same for every table: a writer stages its shard under a unique temporary name;
:func:`commit_shards` then, inside the lock, checks that nobody committed that path since the writer planned
(the manifest's ``generation`` counter), renames the staged file into place and records its entry, so the file
and its entry always agree. The loser of a race for identical work discards its copy; a race between two
different configurations fails with :class:`ConcurrentCommitError`.

A writer also records its *plan*: every shard (path and config hash) that a complete run produces. With it,
:mod:`storage.validate` tells a finished table from one that a crashed or running writer left short.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import fsspec

from storage import s3
from storage.fs import file_fingerprint, finalize, is_local, join, resolve, sha256_file, write_bytes_atomic
from storage.schemas import SCHEMA_VERSION


MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "nearid-dataset"
MANIFEST_LOCK_NAME = ".manifest.lock"
MANIFEST_LOCK_TIMEOUT_S = 600.0
"""How long a commit waits for another process's commit on an object store before it gives up."""


class ManifestError(ValueError):
    """The manifest is missing, unreadable or inconsistent."""


class ConcurrentCommitError(RuntimeError):
    """Another writer committed a different configuration of the same shard while this one was writing."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ShardEntry:
    """One complete shard: where it is, what it holds and how it was made."""

    path: str
    table: str
    rows: int
    bytes: int
    sha256: str
    config_hash: str
    written_at: str = field(default_factory=utc_now)
    stats: dict[str, int | str] = field(default_factory=dict)
    """Counts (rows in, images written, ...) and the producer's settings that are not in its hash (its device and
    dtype, say), for provenance."""
    generation: int = 0
    """The manifest generation that committed this entry."""
    fingerprint: str = ""
    """The file's cheap identity when committed (:func:`storage.fs.file_fingerprint`)."""
    staged: str | None = field(default=None, compare=False, repr=False)
    """Where the written file waits until :func:`commit_shards` renames it into place (never serialised)."""

    def __post_init__(self) -> None:
        if self.path.startswith("/") or ".." in self.path.split("/"):
            raise ManifestError(f"shard path must be relative to the dataset root: {self.path!r}")
        if not self.path.startswith(self.table + "/"):
            raise ManifestError(f"shard {self.path!r} does not belong to table {self.table!r}")
        if self.rows < 0 or self.bytes < 0:
            raise ManifestError(f"shard {self.path!r}: negative rows or bytes")
        if len(self.sha256) != 64:
            raise ManifestError(f"shard {self.path!r}: sha256 must be 64 hex characters")

    @classmethod
    def from_dict(cls, path: str, data: dict) -> ShardEntry:
        try:
            return cls(
                path=path,
                table=str(data["table"]),
                rows=int(data["rows"]),
                bytes=int(data["bytes"]),
                sha256=str(data["sha256"]),
                config_hash=str(data["config_hash"]),
                written_at=str(data.get("written_at", "")),
                stats={str(k): v if isinstance(v, str) else int(v) for k, v in data.get("stats", {}).items()},
                generation=int(data.get("generation", 0)),
                fingerprint=str(data.get("fingerprint", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest entry for shard {path!r} is malformed: {exc!r}") from exc

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["path"], data["staged"]
        return data


@dataclass
class Manifest:
    """Shards by relative path, plus dataset-level identity (version) and counts."""

    shards: dict[str, ShardEntry] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    version: str | None = None
    updated_at: str | None = None
    generation: int = 0
    """Incremented by every commit; a writer remembers the generation it planned at."""
    plans: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per producer (a table name): every shard path a complete run commits, with its config hash."""
    source_etag: str | None = field(default=None, compare=False, repr=False)
    """On S3: the ETag of the manifest this was read from ("" when there was none), so that saving it replaces
    exactly that version; None (a manifest built in memory, or any other filesystem) saves unconditionally."""

    def tables(self) -> dict[str, list[ShardEntry]]:
        """Entries grouped by table, each list sorted by path."""
        grouped: dict[str, list[ShardEntry]] = {}
        for path in sorted(self.shards):
            entry = self.shards[path]
            grouped.setdefault(entry.table, []).append(entry)
        return grouped

    def table(self, name: str) -> list[ShardEntry]:
        return self.tables().get(name, [])

    def counts(self) -> dict[str, dict[str, int]]:
        """Shards, rows and bytes per table (derived, written for humans)."""
        return {
            name: {
                "shards": len(entries),
                "rows": sum(e.rows for e in entries),
                "bytes": sum(e.bytes for e in entries),
            }
            for name, entries in self.tables().items()
        }

    def to_json(self) -> str:
        payload = {
            "format": MANIFEST_FORMAT,
            "schema_version": self.schema_version,
            "version": self.version,
            "updated_at": self.updated_at,
            "generation": self.generation,
            "counts": self.counts(),
            "plans": {name: dict(sorted(plan.items())) for name, plan in sorted(self.plans.items())},
            "shards": {path: self.shards[path].to_dict() for path in sorted(self.shards)},
        }
        return json.dumps(payload, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = MANIFEST_NAME) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{source} is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise ManifestError(f"{source} is nested too deeply to be a manifest") from exc
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{source} is not a nearid dataset manifest (format != {MANIFEST_FORMAT!r})")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(f"{source}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
        shards = data.get("shards")
        if not isinstance(shards, dict):
            raise ManifestError(f"{source}: 'shards' must be an object")
        plans = data.get("plans", {})
        if not isinstance(plans, dict) or not all(
            isinstance(plan, dict) and all(isinstance(v, str) for v in plan.values()) for plan in plans.values()
        ):
            raise ManifestError(f"{source}: 'plans' must map producers to {{shard path: config hash}}")
        if not all(isinstance(entry, dict) for entry in shards.values()):
            raise ManifestError(f"{source}: every shard entry must be an object")
        return cls(
            shards={path: ShardEntry.from_dict(path, entry) for path, entry in shards.items()},
            schema_version=version,
            version=data.get("version"),
            updated_at=data.get("updated_at"),
            generation=int(data.get("generation", 0)),
            plans=plans,
        )

    def is_complete(
        self,
        root: str,
        path: str,
        config_hash: str,
        verify_checksum: bool = True,
    ) -> bool:
        """Whether ``path`` is listed, made with ``config_hash`` and present with the recorded size and
        checksum (the checksum read can be skipped for a quick look)."""
        entry = self.shards.get(path)
        if entry is None or entry.config_hash != config_hash:
            return False
        fs, base = resolve(root)
        full = join(base, path)
        if not fs.exists(full) or fs.size(full) != entry.bytes:
            return False
        if not verify_checksum or (entry.fingerprint and file_fingerprint(fs, full) == entry.fingerprint):
            return True
        return sha256_file(fs, full) == entry.sha256


def manifest_path(root: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, base = resolve(root)
    return fs, join(base, MANIFEST_NAME)


def load_manifest(root: str, missing_ok: bool = False) -> Manifest:
    """Read ``ROOT/manifest.json``; an absent manifest is an empty one when ``missing_ok``."""
    fs, path = manifest_path(root)
    source = f"{root.rstrip('/')}/{MANIFEST_NAME}"
    if s3.is_s3(fs):  # one GET: the bytes and the ETag of the same version
        stored = s3.get(fs, path)
        if stored is None:
            return _missing(root, missing_ok, source_etag="")
        manifest = Manifest.from_json(_decode(stored.data, source), source=source)
        manifest.source_etag = stored.etag
        return manifest
    if not fs.exists(path):
        return _missing(root, missing_ok, source_etag=None)
    with fs.open(path, "rb") as f:
        return Manifest.from_json(_decode(f.read(), source), source=source)


def _missing(root: str, missing_ok: bool, source_etag: str | None) -> Manifest:
    if missing_ok:
        return Manifest(source_etag=source_etag)
    raise ManifestError(f"no manifest at {root.rstrip('/')}/{MANIFEST_NAME}: not a nearid dataset root")


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{source} is not UTF-8 text: {exc}") from exc


_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


@contextmanager
def manifest_lock(root: str, timeout_s: float = MANIFEST_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise manifest read-modify-write cycles across threads, and across processes on local disks (a file
    lock, no timeout) and on S3 buckets that honour conditional writes (the lock object ``ROOT/.manifest.lock``,
    :class:`storage.object_lock.LockTimeout` after ``timeout_s``).

    Other filesystems (``memory://``) have no cross-process lock: there, one process commits at a time.
    """
    from storage.object_lock import object_lock, supports_locking

    fs, base = resolve(root)
    key = f"{fs.protocol}:{base}"
    with _PROCESS_LOCKS_GUARD:
        lock = _PROCESS_LOCKS.setdefault(key, threading.Lock())
    with lock:
        if not is_local(fs):
            if s3.is_s3(fs) and supports_locking(root):
                with object_lock(root, MANIFEST_LOCK_NAME, timeout_s=timeout_s):
                    yield
            else:
                yield
            return
        import fcntl

        os.makedirs(base, exist_ok=True)
        fd = os.open(os.path.join(base, ".manifest.lock"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def save_manifest(root: str, manifest: Manifest) -> None:
    """Write the manifest atomically (temporary file then rename; one PutObject on S3) as the next generation.

    On S3 the write only replaces the version the manifest was read from (:attr:`Manifest.source_etag`): when
    another writer saved in between (this writer's lock lease ran out while it stalled), it fails with
    :class:`ConcurrentCommitError` and saves nothing.
    """
    fs, path = manifest_path(root)
    manifest.updated_at = utc_now()
    manifest.generation += 1
    data = manifest.to_json().encode("utf-8")
    if not s3.is_s3(fs) or manifest.source_etag is None:
        write_bytes_atomic(fs, path, data)
        return
    try:
        if manifest.source_etag:
            manifest.source_etag = s3.put(fs, path, data, if_match=manifest.source_etag)
        else:
            manifest.source_etag = s3.put(fs, path, data, if_absent=True)
    except s3.PreconditionFailed as exc:
        manifest.generation -= 1
        raise ConcurrentCommitError(
            f"{root.rstrip('/')}/{MANIFEST_NAME} changed after this writer read it under the manifest lock (its "
            "lease expired while the writer stalled?); nothing was saved, run it again"
        ) from exc


def record_plan(root: str, producer: str, plan: dict[str, str]) -> None:
    """Record what a complete run of ``producer`` commits (a run with nothing to write records it alone; others
    record it with their first commit, so a run that commits nothing changes nothing)."""
    with manifest_lock(root):
        manifest = load_manifest(root, missing_ok=True)
        if manifest.plans.get(producer) != plan:
            manifest.plans[producer] = dict(plan)
            save_manifest(root, manifest)


def commit_shards(
    root: str,
    entries: Iterable[ShardEntry],
    since: int | None = None,
    version: str | None = None,
    drop: Iterable[str] = (),
    plans: Mapping[str, Mapping[str, str]] | None = None,
) -> Manifest:
    """Publish staged shards in one atomic manifest update; return the new manifest.

    ``since`` is the generation the writer planned at: an entry that another writer committed after it wins,
    and this writer's staged copy is discarded when it holds the same configuration (the same work, done twice),
    or the commit fails with :class:`ConcurrentCommitError` when it does not. ``drop`` removes entries in the
    same update (a table that shrank); ``plans`` ({producer: {path: config hash}}) records the run's plans with it.
    """
    entries = list(entries)
    fs, base = resolve(root)
    with manifest_lock(root):
        manifest = load_manifest(root, missing_ok=True)
        conflicts = []
        for entry in entries:
            current = manifest.shards.get(entry.path)
            if since is not None and current is not None and current.generation > since:
                conflicts.append((entry, current))
        different = [(e, c) for e, c in conflicts if c.config_hash != e.config_hash]
        if different:
            for entry in entries:
                _discard(fs, base, entry)
            entry, current = different[0]
            raise ConcurrentCommitError(
                f"{entry.path} was committed by another writer with configuration {current.config_hash} while this "
                f"one wrote {entry.config_hash}; run one configuration per table at a time"
            )
        lost = {entry.path for entry, _ in conflicts}
        generation = manifest.generation + 1
        for entry in entries:
            if entry.path in lost:
                _discard(fs, base, entry)
                continue
            if entry.staged is not None:
                finalize(fs, join(base, entry.staged), join(base, entry.path))
            fingerprint = file_fingerprint(fs, join(base, entry.path))
            manifest.shards[entry.path] = dataclasses.replace(
                entry, staged=None, generation=generation, fingerprint=fingerprint
            )
        for path in drop:
            manifest.shards.pop(path, None)
        for producer, plan in (plans or {}).items():
            manifest.plans[producer] = dict(plan)
        if version is not None:
            manifest.version = version
        save_manifest(root, manifest)
        return manifest


def _discard(fs: fsspec.AbstractFileSystem, base: str, entry: ShardEntry) -> None:
    if entry.staged is not None and fs.exists(join(base, entry.staged)):
        fs.rm(join(base, entry.staged))


def drop_shards(root: str, paths: Iterable[str]) -> Manifest:
    """Remove entries from the manifest (their files stay until overwritten or deleted)."""
    with manifest_lock(root):
        manifest = load_manifest(root, missing_ok=True)
        for path in paths:
            manifest.shards.pop(path, None)
        save_manifest(root, manifest)
        return manifest
