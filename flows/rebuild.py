"""The ``rebuild-dataset`` flow: curate, regenerate every configuration, validate, publish a version.

Thin by design: curation is the ``curate`` flow, generation the ``regenerate`` flow (one task per
shard, complete shards skipped), validation :func:`storage.validate.validate`. Only a valid dataset is
published: its manifest gets a version id (UTC time + a short hash of every shard's path, config hash
and checksum) and ``versions/<id>.json`` records each shard's config hash and checksum. A rebuild that
changed nothing keeps the current version.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.curate import curate_flow
from flows.logs import run_logger
from flows.regenerate import DEFAULT_SHARD_TIMEOUT_S, regenerate_flow, validate_dataset


VERSIONS_DIR = "versions"


def version_path(version: str) -> str:
    """Where a version's record lives, relative to the dataset root."""
    return f"{VERSIONS_DIR}/{version}.json"


def content_digest(shards: dict[str, Any]) -> str:
    """SHA-256 over every shard's path, config hash and checksum: equal digests, equal datasets."""
    lines = [f"{path}\t{entry.config_hash}\t{entry.sha256}" for path, entry in sorted(shards.items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def version_record(version: str, digest: str, manifest: Any, created_at: str) -> dict[str, Any]:
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


def publish_version(root: str, now: datetime | None = None) -> dict[str, Any]:
    """Give the dataset at ``root`` a version id and write its record; returns ``{version, record, changed}``.

    Under the manifest lock: the record is written first, then the manifest's ``version``, so the
    manifest never names a version without a record. When the current version already has this
    content, nothing is written.
    """
    from storage.fs import join, resolve, write_bytes_atomic
    from storage.manifest import load_manifest, manifest_lock, save_manifest

    fs, base = resolve(root)
    with manifest_lock(root):
        manifest = load_manifest(root)
        digest = content_digest(manifest.shards)
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


@task(name="publish-version", cache_policy=NO_CACHE)
def publish_version_task(root: str) -> dict[str, Any]:
    """Publish the validated dataset as a new version (see :func:`publish_version`)."""
    published = publish_version(root)
    state = "published" if published["changed"] else "unchanged, keeping"
    run_logger().info("%s version %s (%s)", state, published["version"], published["record"])
    return published


def _version_artifact(root: str, published: dict[str, Any], counts: dict[str, Any]) -> None:
    """A markdown artifact of the version, under a stable key so the UI shows its history."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:  # called with .fn(): no run to attach it to
        return
    rows = "\n".join(f"| `{table}` | {c['shards']} | {c['rows']} | {c['bytes']} |" for table, c in counts.items())
    markdown = (
        f"# Dataset version `{published['version']}`\n\nroot: `{root}`; record: `{published['record']}`\n\n"
        f"| table | shards | rows | bytes |\n|---|---|---|---|\n{rows}\n"
    )
    create_markdown_artifact(markdown, key="nearid-dataset-version", description=f"dataset version of {root}")


@flow(name="rebuild-dataset")
def rebuild_dataset(
    root: str,
    configurations: list[str] | None = None,
    source: Literal["procedural", "syncd"] = "procedural",
    input_dir: str | None = None,
    identities: int = 1000,
    image_size: int = 512,
    seed: int = 0,
    shard_size: int = 256,
    curate_workers: int = 1,
    force: bool = False,
    model_dir: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    overrides: dict[str, Any] | None = None,
    shard_timeout_s: float = DEFAULT_SHARD_TIMEOUT_S,
    retries: int = 1,
    ray_address: str | None = None,
    slot_dir: str | None = None,
) -> dict[str, Any]:
    """Curate ``root``, generate every configuration (default: the nine paper ones), validate, publish.

    Every step skips what is already complete for the same configuration, so a rerun after a crash
    or an unchanged weekly rebuild redoes nothing; ``force`` rewrites everything.
    """
    from generators.registry import PAPER_CONFIGS
    from storage import load_manifest

    configurations = list(configurations or PAPER_CONFIGS)
    curated = curate_flow(
        out=root,
        source=source,
        input_dir=input_dir,
        identities=identities,
        image_size=image_size,
        seed=seed,
        shard_size=shard_size,
        workers=curate_workers,
        force=force,
    )
    generated = regenerate_flow(
        root,
        configurations,
        shards=None,
        force=force,
        model_dir=model_dir,
        device=device,
        dtype=dtype,
        overrides=overrides,
        shard_timeout_s=shard_timeout_s,
        retries=retries,
        ray_address=ray_address,
        slot_dir=slot_dir,
        validate_at_end=False,
    )
    validation = validate_dataset(root)
    published = publish_version_task(root)
    counts = load_manifest(root).counts()
    _version_artifact(root, published, counts)
    return {
        "root": root,
        "version": published["version"],
        "version_changed": published["changed"],
        "curated": curated,
        "generated": generated,
        "validation": validation,
        "counts": counts,
    }
