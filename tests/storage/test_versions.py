"""Dataset versions: a valid dataset gets a stable version and a record of every shard; an invalid one none."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from generators.run import generate_distractors
from storage import load_manifest
from storage.validate import validate
from storage.versions import InvalidDatasetError, content_digest, publish_version


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


def test_an_invalid_dataset_is_refused_with_its_problems(dataset_copy: str) -> None:
    first = publish_version(dataset_copy)["version"]
    generate_distractors(dataset_copy, ["null"], overrides=FAST, progress=False)
    shard = Path(dataset_copy) / "distractors" / "null" / "shard-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum finds it
    shard.write_bytes(bytes(data))
    with pytest.raises(InvalidDatasetError, match="1 validation errors, no version published") as caught:
        publish_version(dataset_copy, decode=False)
    assert [(p.code, p.where) for p in caught.value.problems] == [
        ("checksum-mismatch", "distractors/null/shard-00001.parquet")
    ]
    assert load_manifest(dataset_copy).version == first
    assert len(list((Path(dataset_copy) / "versions").iterdir())) == 1
