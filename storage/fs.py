"""Filesystem access through fsspec, so local paths and object-store URLs behave the same."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from storage.s3 import is_s3


S3_PROTOCOLS = ("s3", "s3a")


def resolve(root: str | os.PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the filesystem and the protocol-free path for a local path or URL.

    S3 filesystems come without s3fs's listings cache: it never expires, so a process would go on seeing the
    size, ETag or absence of an object that another process has since rewritten (a manifest, say).
    """
    url = str(root)
    options = {"use_listings_cache": False} if fsspec.core.split_protocol(url)[0] in S3_PROTOCOLS else {}
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path.rstrip("/") or "/"


def join(*parts: str) -> str:
    """Join path segments with '/', the separator every fsspec filesystem understands."""
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True for the local filesystem, where atomic rename, fsync and file locks are available."""
    return isinstance(fs, LocalFileSystem)


def temp_name(final_path: str) -> str:
    """A unique sibling name for writing ``final_path`` before its atomic rename.

    The name ends in ``.tmp`` so that globs such as ``*.parquet`` never pick up a partial file, and carries the
    writer's pid, so a later run can tell the leftovers of a dead writer from the file of a live one.
    """
    head, _, tail = final_path.rpartition("/")
    return join(head, f".{tail}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")


TEMP_MAX_AGE_S = 24 * 3600
"""On object stores (no pids to ask), a temporary file this old belongs to a dead writer."""


def remove_dead_temps(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    """Delete the temporary files in ``folder`` that no running writer can still own; return their paths.

    Local disks: the pid in the name is not a running process. Object stores: older than a day.
    """
    if not fs.exists(folder):
        return []
    removed = []
    for path in fs.glob(join(folder, ".*.tmp")):
        owner = path.rsplit(".", 2)[-2].split("-")[0]
        if is_local(fs):
            if not owner.isdigit() or _running(int(owner)):
                continue
        else:
            modified = fs.modified(path).timestamp() if hasattr(fs, "modified") else None
            if modified is None or time.time() - modified < TEMP_MAX_AGE_S:
                continue
        fs.rm(path)
        removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sync_file(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Flush a local file's bytes to the disk (a no-op on object stores)."""
    if is_local(fs):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def finalize(fs: fsspec.AbstractFileSystem, tmp_path: str, final_path: str) -> None:
    """Make a fully written temporary file visible under its final name.

    Local files are fsynced and renamed atomically (``os.replace``); other filesystems use their
    own move, which is atomic on some (memory) and a copy-then-delete on object stores, where the
    manifest, not the file's presence, decides what is complete.
    """
    if is_local(fs):
        sync_file(fs, tmp_path)  # cheap when the writer already synced it
        os.replace(tmp_path, final_path)
        dir_fd = os.open(os.path.dirname(final_path) or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    else:
        fs.mv(tmp_path, final_path)


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new content.

    On S3 one PutObject already is atomic; elsewhere the bytes go to a temporary name that is then renamed.
    """
    if is_s3(fs):
        fs.pipe_file(path, data)
        return
    fs.makedirs(path.rpartition("/")[0] or "/", exist_ok=True)
    tmp = temp_name(path)
    with fs.open(tmp, "wb") as f:
        f.write(data)
    finalize(fs, tmp, path)


def file_fingerprint(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A cheap identity of a file's current content: inode, mtime and size on local disks (a rename over the
    file changes it), the ETag or modification time on object stores. Equal fingerprints mean an unchanged
    file; a different one (a copied root, say) only means the checksum has to be read to know."""
    if is_local(fs):
        st = os.stat(path)
        return f"local:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
    info = fs.info(path)
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or info.get("created")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]  # s3fs: ("s3", "s3a")
    return f"{protocol}:{tag}:{info.get('size')}" if tag is not None else ""


def sha256_file(fs: fsspec.AbstractFileSystem, path: str, chunk_size: int = 1 << 22) -> str:
    """Stream a file through SHA-256."""
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class HashingWriter:
    """A write-only file object that hashes and counts bytes on their way to the real file.

    pyarrow's Parquet writer only appends, so the checksum is known when the writer closes and the
    shard never has to be read back.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self._size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self._digest.update(view)
        self._size += view.nbytes
        self._raw.write(view)
        return view.nbytes

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        self._raw.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        """Closing is left to the owner of the underlying file."""
        self.closed = True

    @property
    def size(self) -> int:
        return self._size

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


@contextmanager
def open_hashing(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[HashingWriter]:
    """Open ``path`` for binary writing through a :class:`HashingWriter`."""
    with fs.open(path, "wb") as raw:
        writer = HashingWriter(raw)
        yield writer
        raw.flush()
