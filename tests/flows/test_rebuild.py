from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.rebuild import content_digest, publish_version
from generators.run import generate_distractors
from storage import load_manifest
from storage.validate import validate


FAST = {"steps": 2, "resolution": 64}


def test_publish_version_records_every_shard_and_is_stable(dataset_copy: str) -> None:
    first = publish_version(dataset_copy, now=datetime(2026, 3, 2, 4, 5, 6, tzinfo=UTC))
    manifest = load_manifest(dataset_copy)
    digest = content_digest(manifest.shards)
    assert first == {
        "version": f"20260302T040506Z-{digest[:12]}",
        "record": f"versions/{first['version']}.json",
        "changed": True,
    }
    assert manifest.version == first["version"]
    record = json.loads((Path(dataset_copy) / first["record"]).read_text())
    assert record["version"] == first["version"] and record["digest"] == digest
    assert record["created_at"] == "2026-03-02T04:05:06Z"
    assert set(record["shards"]) == set(manifest.shards) and len(record["shards"]) == 4  # 3 identities + rejects
    for path, entry in manifest.shards.items():
        assert record["shards"][path]["config_hash"] == entry.config_hash
        assert record["shards"][path]["sha256"] == entry.sha256

    again = publish_version(dataset_copy)
    assert again == {**first, "changed": False}  # same content: same version, nothing written
    assert len(list((Path(dataset_copy) / "versions").iterdir())) == 1

    generate_distractors(dataset_copy, ["null"], overrides=FAST, progress=False)
    changed = publish_version(dataset_copy)
    assert changed["changed"] and changed["version"] != first["version"]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{12}", changed["version"])
    assert load_manifest(dataset_copy).version == changed["version"]
    assert len(json.loads((Path(dataset_copy) / changed["record"]).read_text())["shards"]) == 4 + 3 + 3
    assert [p for p in validate(dataset_copy, progress=False) if p.severity == "error"] == []


def test_content_digest_depends_on_config_hash_and_checksum(dataset_copy: str) -> None:
    from dataclasses import replace

    shards = load_manifest(dataset_copy).shards
    path = sorted(shards)[0]
    base = content_digest(shards)
    assert content_digest({**shards, path: replace(shards[path], config_hash="x" * 16)}) != base
    assert content_digest({**shards, path: replace(shards[path], sha256="0" * 64)}) != base
    assert content_digest({**shards, path: replace(shards[path], written_at="later")}) == base


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
