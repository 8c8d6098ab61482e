"""``nearid validate``: each kind of damage gives its own clear message and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nearid.cli import main
from storage import ShardWriter, TableReader, commit_shards, load_manifest, shard_path
from storage.validate import validate


def error_codes(root: str) -> list[str]:
    return [p.code for p in validate(root, progress=False) if p.severity == "error"]


def rewrite_shard(root: str, path: str, rows: list[dict]) -> None:
    """Replace a shard through the real writer and commit it under its own configuration hash, so only the
    injected defect remains."""
    with ShardWriter(root, "identities", path, load_manifest(root).shards[path].config_hash) as writer:
        for row in rows:
            writer.write(row)
    commit_shards(root, [writer.entry])


def raw_rows(root: str, path: str) -> list[dict]:
    return [r for r in TableReader(root, "identities").iter_rows(decode=False) if r["id"] in shard_ids(root, path)]


def shard_ids(root: str, path: str) -> set[int]:
    return set(pq.read_table(Path(root) / path, columns=["id"]).column(0).to_pylist())


def test_valid_dataset_passes(procedural_root: str, capsys: pytest.CaptureFixture) -> None:
    assert validate(procedural_root, progress=False) == []
    assert main(["validate", procedural_root, "--no-progress"]) == 0
    assert "OK:" in capsys.readouterr().out


def test_truncated_png(dataset_copy: str, capsys: pytest.CaptureFixture) -> None:
    path = shard_path("identities", 1)
    rows = raw_rows(dataset_copy, path)
    victim = rows[2]
    victim["images2"] = {"bytes": victim["images2"]["bytes"][:200], "path": None}
    rewrite_shard(dataset_copy, path, rows)
    problems = validate(dataset_copy, progress=False)
    assert [p.code for p in problems] == ["image-undecodable"]
    assert f"id={victim['id']} images2" in problems[0].where and path in problems[0].where
    assert main(["validate", dataset_copy, "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "[image-undecodable]" in out and "INVALID" in out


def test_wrong_column_type(dataset_copy: str) -> None:
    path = shard_path("identities", 0)
    table = pq.read_table(Path(dataset_copy) / path)
    table = table.set_column(
        table.schema.get_field_index("n_images"),
        "n_images",
        pa.array([str(v) for v in table.column("n_images").to_pylist()]),
    )
    pq.write_table(table, Path(dataset_copy) / path)
    entry = load_manifest(dataset_copy).shards[path]
    from storage.fs import resolve, sha256_file

    fs, base = resolve(dataset_copy)
    fixed = type(entry)(
        **{**entry.__dict__, "bytes": fs.size(f"{base}/{path}"), "sha256": sha256_file(fs, f"{base}/{path}")}
    )
    commit_shards(dataset_copy, [fixed])
    problems = validate(dataset_copy, progress=False)
    assert [p.code for p in problems] == ["schema-mismatch"]
    assert "'n_images' has type string, expected int64" in problems[0].message


def test_manifest_checksum_mismatch(dataset_copy: str) -> None:
    manifest_file = Path(dataset_copy) / "manifest.json"
    data = json.loads(manifest_file.read_text())
    data["shards"]["identities/shard-00002.parquet"]["sha256"] = "0" * 64
    manifest_file.write_text(json.dumps(data))
    problems = validate(dataset_copy, progress=False)
    assert [p.code for p in problems] == ["checksum-mismatch"]
    assert problems[0].where == "identities/shard-00002.parquet"


def test_flipped_byte_is_caught_by_checksum(dataset_copy: str) -> None:
    shard = Path(dataset_copy) / "identities" / "shard-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert "checksum-mismatch" in error_codes(dataset_copy)


def test_duplicate_ids_across_shards(dataset_copy: str) -> None:
    first = raw_rows(dataset_copy, shard_path("identities", 0))
    path = shard_path("identities", 1)
    rows = raw_rows(dataset_copy, path)
    rows[0]["id"] = first[1]["id"]
    rewrite_shard(dataset_copy, path, rows)
    problems = validate(dataset_copy, progress=False)
    assert [p.code for p in problems] == ["duplicate-id"]
    assert "identities/shard-00000.parquet" in problems[0].message


def test_missing_shard(dataset_copy: str, capsys: pytest.CaptureFixture) -> None:
    (Path(dataset_copy) / "identities" / "shard-00001.parquet").unlink()
    problems = validate(dataset_copy, progress=False)
    assert [p.code for p in problems] == ["shard-missing"]
    assert main(["validate", dataset_copy, "--no-progress"]) == 1
    assert (
        "identities/shard-00001.parquet: listed in the manifest but the file does not exist" in capsys.readouterr().out
    )


def test_no_manifest_and_broken_manifest(tmp_path: Path) -> None:
    assert [p.code for p in validate(str(tmp_path), progress=False)] == ["manifest-missing"]
    (tmp_path / "manifest.json").write_text("{not json")
    problems = validate(str(tmp_path), progress=False)
    assert [p.code for p in problems] == ["manifest-invalid"] and "not valid JSON" in problems[0].message


def test_mask_defects(dataset_copy: str) -> None:
    import numpy as np

    path = shard_path("identities", 0)
    rows = raw_rows(dataset_copy, path)
    rows[0]["masks1"] = np.ones((10, 10), dtype=bool)  # wrong size
    rows[1]["masks2"] = None  # view without mask
    rows[2]["masks1"] = np.zeros((64, 64), dtype=bool)  # nothing in the foreground
    rewrite_shard(dataset_copy, path, rows)
    assert sorted(error_codes(dataset_copy)) == ["mask-empty", "mask-missing", "mask-size-mismatch"]
