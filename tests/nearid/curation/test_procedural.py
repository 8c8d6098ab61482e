from __future__ import annotations

import uuid

import numpy as np

from nearid.common.procedural import ProceduralConfig, plan_identities, render_identity
from nearid.curation.procedural import curate_procedural
from storage import TableReader, load_manifest
from storage.validate import validate


def test_curation_writes_valid_shards_with_splits(procedural_root: str) -> None:
    manifest = load_manifest(procedural_root)
    assert [e.rows for e in manifest.table("identities")] == [5, 5, 2]
    assert manifest.table("rejects")[0].rows == 0
    assert all(e.stats == {"rows_in": e.rows, "rejected": 0} for e in manifest.table("identities"))
    rows = list(TableReader(procedural_root, "identities").iter_rows())
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    # stored pixels equal a fresh render: nothing lossy on the way
    config = ProceduralConfig(identities=12, image_size=64, seed=3)
    plan = plan_identities(config)[7]
    fresh = render_identity(plan, config)
    stored = next(r for r in rows if r["id"] == plan.id)
    assert np.array_equal(np.asarray(stored["images1"]), fresh["images1"])
    assert np.array_equal(stored["masks1"], fresh["masks1"])


def test_rerun_skips_complete_shards_and_config_change_rewrites(tmp_path) -> None:
    root = str(tmp_path / "ds")
    config = ProceduralConfig(identities=9, image_size=48)
    first = curate_procedural(root, config, shard_size=4, progress=False)
    assert (first.shards_written, first.shards_skipped) == (3, 0)
    again = curate_procedural(root, config, shard_size=4, progress=False)
    assert (again.shards_written, again.shards_skipped) == (0, 3)
    changed = curate_procedural(
        root, ProceduralConfig(identities=9, image_size=48, seed=1), shard_size=4, progress=False
    )
    assert changed.shards_written == 3 and changed.config_hash != first.config_hash
    fewer = curate_procedural(root, config, shard_size=5, progress=False)
    assert fewer.shards_written == 2
    assert sorted(load_manifest(root).shards) == [
        "identities/shard-00000.parquet",
        "identities/shard-00001.parquet",
        "rejects/curate-00000.parquet",  # procedural rejects nothing; the empty shard says so
    ]
    assert not [p for p in validate(root, progress=False) if p.severity == "error"]


def test_curation_is_deterministic_across_runs_and_workers(tmp_path) -> None:
    config = ProceduralConfig(identities=10, image_size=48, seed=9)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    curate_procedural(a, config, shard_size=3, progress=False)
    curate_procedural(b, config, shard_size=3, workers=2, progress=False)
    sums_a = {p: e.sha256 for p, e in load_manifest(a).shards.items()}
    sums_b = {p: e.sha256 for p, e in load_manifest(b).shards.items()}
    assert sums_a == sums_b and len(sums_a) == 5  # 4 identity shards + the rejects shard


def test_curation_on_an_fsspec_url() -> None:
    root = f"memory://curate-{uuid.uuid4().hex}/ds"
    summary = curate_procedural(root, ProceduralConfig(identities=6, image_size=40), shard_size=4, progress=False)
    assert summary.identities == 6
    assert len(TableReader(root, "identities")) == 6
    assert validate(root, progress=False) == []
