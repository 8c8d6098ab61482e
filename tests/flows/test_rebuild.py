from __future__ import annotations

from pathlib import Path

import pytest

from generators.run import generate_distractors
from storage import load_manifest
from storage.versions import publish_version


FAST = {"steps": 2, "resolution": 64}


def test_rebuild_curates_generates_validates_and_publishes(prefect_api, tmp_path: Path) -> None:
    from prefect import get_client

    from flows.rebuild import rebuild_dataset

    root = str(tmp_path / "data")
    params = {
        "root": root,
        "configurations": ["procedural", "null"],
        "identities": 6,
        "image_size": 48,
        "shard_size": 3,
        "overrides": FAST,
        "retries": 0,
        "slot_dir": str(tmp_path / "slots"),
    }
    first = rebuild_dataset(**params)
    assert first["curated"]["shards_written"] == 2 and first["generated"]["shards_written"] == 4
    assert first["version_changed"] and first["validation"]["errors"] == 0
    manifest = load_manifest(root)
    assert manifest.version == first["version"]
    assert {t: c["shards"] for t, c in first["counts"].items()} == {
        "identities": 2,
        "distractors/procedural": 2,
        "distractors/null": 2,
        "rejects": 1 + 2 + 2,  # curation's, then one per distractor shard
    }
    assert (tmp_path / "data" / "versions" / f"{first['version']}.json").exists()
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    assert any(a.key == "nearid-dataset-version" and first["version"] in (a.data or "") for a in artifact)

    second = rebuild_dataset(**params)  # nothing changed: nothing rewritten, same version
    assert second["curated"]["shards_written"] == 0 and second["generated"]["shards_written"] == 0
    assert second["version"] == first["version"] and not second["version_changed"]


def corrupt_in_place(shard: Path) -> None:
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, so only a checksum finds it
    shard.write_bytes(bytes(data))


def rebuild_null(root: str, tmp_path: Path, **options: object) -> object:
    """Rebuild ``root`` (the procedural fixture's curation) with the ``null`` configuration."""
    from flows.rebuild import rebuild_dataset

    curation = {"identities": 12, "image_size": 64, "seed": 3, "shard_size": 5}
    slots = str(tmp_path / "slots")
    return rebuild_dataset(root=root, configurations=["null"], overrides=FAST, slot_dir=slots, **curation, **options)


def test_rebuild_fails_with_the_problems_and_publishes_nothing(prefect_api, dataset_copy: str, tmp_path: Path) -> None:
    generate_distractors(dataset_copy, ["null", "procedural"], overrides=FAST, progress=False)
    before = publish_version(dataset_copy)["version"]
    # a table this rebuild does not regenerate is damaged: validation fails and no version is published
    corrupt_in_place(Path(dataset_copy) / "distractors" / "procedural" / "shard-00001.parquet")
    state = rebuild_null(dataset_copy, tmp_path, return_state=True)
    assert state.is_failed()
    with pytest.raises(
        Exception, match=r"validation errors:\n.*\[checksum-mismatch\] distractors/procedural/shard-00001"
    ):
        state.result()
    assert load_manifest(dataset_copy).version == before


def test_rebuild_heals_a_damaged_shard_of_a_table_it_regenerates(
    prefect_api, dataset_copy: str, tmp_path: Path
) -> None:
    generate_distractors(dataset_copy, ["null"], overrides=FAST, progress=False)
    committed = load_manifest(dataset_copy).shards["distractors/null/shard-00001.parquet"].sha256
    corrupt_in_place(Path(dataset_copy) / "distractors" / "null" / "shard-00001.parquet")
    result = rebuild_null(dataset_copy, tmp_path)
    assert result["generated"]["shards_written"] == 1 and result["validation"]["errors"] == 0
    assert load_manifest(dataset_copy).shards["distractors/null/shard-00001.parquet"].sha256 == committed
