"""Conditional requests on S3 through s3fs: create-if-absent, replace-if-unchanged, delete-if-unchanged.

S3 applies ``If-None-Match: *`` and ``If-Match: <ETag>`` on PutObject (and ``If-Match`` on DeleteObject)
atomically, which is what locks and compare-and-swap updates on a bucket are built from. s3fs passes these
parameters to botocore unchanged (``S3FileSystem.call_s3``); this module names the outcomes: a failed
condition is :class:`PreconditionFailed`, an absent object ``None`` or :class:`FileNotFoundError`.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import fsspec


class PreconditionFailed(RuntimeError):
    """The object changed, appeared or vanished since the ETag the request was conditional on."""


class ConditionalConflict(PreconditionFailed):
    """S3 answered 409: another request on the same object was in flight; the outcome is unknown, ask again."""


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes with what the server said about them, all from one response."""

    data: bytes
    etag: str
    last_modified: datetime
    server_time: datetime
    """The response's ``Date``: the server's clock, to age the object without trusting the local one."""


def is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    """True for an s3fs filesystem (AWS S3 or any S3-compatible server)."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "s3" in protocol


def _bucket_key(fs: fsspec.AbstractFileSystem, path: str) -> tuple[str, str]:
    bucket, key, _ = fs.split_path(path)
    if not key:
        raise ValueError(f"{path!r} names a bucket, not an object")
    return bucket, key


def error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception s3fs translated (its cause is botocore's ClientError)."""
    for candidate in (exc, exc.__cause__):
        response = getattr(candidate, "response", None)
        if isinstance(response, dict):
            return response.get("Error", {}).get("Code")
    return None


def _condition_failure(exc: OSError, what: str) -> PreconditionFailed | None:
    """The failed ``If-Match``/``If-None-Match`` (412) or the race with another request (409) behind ``exc``."""
    if error_code(exc) == "ConditionalRequestConflict" or exc.errno == errno.EBUSY:
        return ConditionalConflict(f"{what}: another request on it was in flight")
    if isinstance(exc, FileExistsError) or error_code(exc) == "PreconditionFailed":  # s3fs: If-None-Match failed
        return PreconditionFailed(f"{what}: changed by another writer")
    return None


def _server_time(response: dict[str, Any]) -> datetime:
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    return parsedate_to_datetime(date).astimezone(UTC) if date else datetime.now(UTC)


def put(
    fs: fsspec.AbstractFileSystem,
    path: str,
    data: bytes,
    if_match: str | None = None,
    if_absent: bool = False,
) -> str:
    """Write ``data`` to ``path`` in one PutObject and return the new ETag.

    ``if_absent``: only when no object exists; ``if_match``: only when the object's ETag is still this one.
    A failed condition raises :class:`PreconditionFailed` (also when ``if_match`` finds no object).
    """
    bucket, key = _bucket_key(fs, path)
    condition: dict[str, str] = {}
    if if_absent:
        condition["IfNoneMatch"] = "*"
    if if_match is not None:
        condition["IfMatch"] = if_match
    try:
        response = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
    except FileNotFoundError as exc:
        if if_match is None:
            raise
        raise PreconditionFailed(f"{path}: gone (expected ETag {if_match})") from exc
    except OSError as exc:
        failure = _condition_failure(exc, f"{path} ({condition})") if condition else None
        if failure is not None:
            raise failure from exc
        raise
    finally:
        fs.invalidate_cache(path)
    return response["ETag"]


def get(fs: fsspec.AbstractFileSystem, path: str) -> StoredObject | None:
    """Read a whole object and its ETag in one GetObject, or None when it does not exist."""
    bucket, key = _bucket_key(fs, path)

    async def _get() -> StoredObject | None:
        try:
            response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        async with response["Body"] as body:
            data = await body.read()
        return StoredObject(data, response["ETag"], response["LastModified"], _server_time(response))

    return fsspec.asyn.sync(fs.loop, _get)


def delete(fs: fsspec.AbstractFileSystem, path: str, if_match: str) -> None:
    """Delete ``path`` only while its ETag is ``if_match``; :class:`PreconditionFailed` when it is not."""
    bucket, key = _bucket_key(fs, path)
    try:
        fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=if_match)
    except FileNotFoundError as exc:
        raise PreconditionFailed(f"{path}: already gone") from exc
    except OSError as exc:
        failure = _condition_failure(exc, f"{path} (expected ETag {if_match})")
        if failure is not None:
            raise failure from exc
        raise
    finally:
        fs.invalidate_cache(path)
