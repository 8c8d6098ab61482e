"""The ``rebuild-dataset`` flow: curate, regenerate every configuration, validate, publish a version.

Thin by design: curation is the ``curate`` flow, generation the ``regenerate`` flow (one task per
shard, complete shards skipped), validation :func:`storage.validate.validate`, publishing
:func:`storage.versions.publish_version` (also ``nearid publish ROOT``). Only a valid dataset is
published: its manifest gets a version id (UTC time + a short hash of every shard's path, config hash
and checksum) and ``versions/<id>.json`` records each shard's config hash and checksum. A rebuild that
changed nothing keeps the current version.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.curate import curate_flow
from flows.logs import run_logger
from flows.regenerate import DEFAULT_SHARD_TIMEOUT_S, regenerate_flow, validate_dataset
from storage.versions import publish_version


@task(name="publish-version", cache_policy=NO_CACHE)
def publish_version_task(root: str) -> dict[str, Any]:
    """Publish the dataset the flow just validated as a new version (:func:`storage.versions.publish_version`)."""
    published = publish_version(root, validated=True)
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
    fan_out: str | None = None,
    fan_out_width: int | None = None,
    shards_per_task: int | None = None,
) -> dict[str, Any]:
    """Curate ``root``, generate every configuration (default: the nine paper ones), validate, publish.

    Every step skips what is already complete for the same configuration, so a rerun after a crash
    or an unchanged weekly rebuild redoes nothing; ``force`` rewrites everything. Where shards run
    (``ray_address``, ``fan_out``, ``fan_out_width``, ``shards_per_task``) is the ``regenerate`` flow's choice.
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
        fan_out=fan_out,
        fan_out_width=fan_out_width,
        shards_per_task=shards_per_task,
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
