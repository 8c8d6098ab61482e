"""Dataset versions: a valid dataset gets a version id and a record of every shard, so a training run can say
exactly which data it saw.

A version id is ``<UTC time>-<12 hex of the content digest>``; the digest covers every shard's path, config hash
and checksum, so equal digests mean equal datasets. ``versions/<id>.json`` records each shard's config hash and
checksum; the manifest's ``version`` names the current one. Only a dataset that validates without errors is
published, and a dataset unchanged since its current version keeps it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from storage.fs import join, resolve, write_bytes_atomic
from storage.manifest import Manifest, load_manifest, manifest_lock, save_manifest
from storage.validate import Problem, validate


VERSIONS_DIR = "versions"


class InvalidDatasetError(ValueError):
    """The dataset has validation errors, so no version is published; ``problems`` lists them."""

    def __init__(self, root: str, problems: list[Problem]) -> None:
        super().__init__(f"{root}: {len(problems)} validation errors, no version published")
        self.problems = problems


def version_path(version: str) -> str:
    """Where a version's record lives, relative to the dataset root."""
    return f"{VERSIONS_DIR}/{version}.json"


def content_digest(shards: dict[str, Any]) -> str:
    """SHA-256 over every shard's path, config hash and checksum: equal digests, equal datasets."""
    lines = [f"{path}\t{entry.config_hash}\t{entry.sha256}" for path, entry in sorted(shards.items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def version_record(version: str, digest: str, manifest: Manifest, created_at: str) -> dict[str, Any]:
    """What ``versions/<id>.json`` holds: the version, when, and each shard's config hash and checksum."""
    return {
        "version": version,
        "created_at": created_at,
        "digest": digest,
        "counts": manifest.counts(),
        "shards": {
            path: {
                "table": entry.table,
                "config_hash": entry.config_hash,
                "sha256": entry.sha256,
                "rows": entry.rows,
                "bytes": entry.bytes,
            }
            for path, entry in sorted(manifest.shards.items())
        },
    }


def check_publishable(root: str, decode: bool = True, progress: bool = False) -> str:
    """Validate ``root``; the content digest it validated, or :class:`InvalidDatasetError` with every error."""
    digest = content_digest(load_manifest(root).shards)
    errors = [p for p in validate(root, decode=decode, progress=progress) if p.severity == "error"]
    if errors:
        raise InvalidDatasetError(root, errors)
    return digest


def publish_version(
    root: str, now: datetime | None = None, validated: bool = False, decode: bool = True, progress: bool = False
) -> dict[str, Any]:
    """Give the dataset at ``root`` a version id and write its record; returns ``{version, record, changed}``.

    The dataset is validated first (``decode``: also every image) unless the caller just did (``validated``);
    a dataset with errors is refused. Under the manifest lock the record is written first, then the manifest's
    ``version``, so the manifest never names a version without a record; a dataset that changed while it was
    validated is refused too. When the current version already has this content, nothing is written.
    """
    expected = None if validated else check_publishable(root, decode, progress)
    fs, base = resolve(root)
    with manifest_lock(root):
        manifest = load_manifest(root)
        digest = content_digest(manifest.shards)
        if expected is not None and digest != expected:
            raise ValueError(f"{root} changed while it was validated: publish it again")
        current = manifest.version
        if current and current.endswith("-" + digest[:12]) and fs.exists(join(base, version_path(current))):
            return {"version": current, "record": version_path(current), "changed": False}
        stamp = (now or datetime.now(UTC)).astimezone(UTC)
        version = f"{stamp:%Y%m%dT%H%M%SZ}-{digest[:12]}"
        record = version_record(version, digest, manifest, f"{stamp:%Y-%m-%dT%H:%M:%SZ}")
        write_bytes_atomic(fs, join(base, version_path(version)), (json.dumps(record, indent=2) + "\n").encode())
        manifest.version = version
        save_manifest(root, manifest)
    return {"version": version, "record": version_path(version), "changed": True}
