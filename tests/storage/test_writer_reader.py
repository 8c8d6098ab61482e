"""Round trips through our writer, our reader and ``datasets``, on a local folder and on ``memory://``."""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest

from storage import ShardWriter, TableReader, commit_shards, data_files, load_manifest, shard_path
from storage.fs import resolve, sha256_file


def make_rows(n: int, size: int = 48, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        n_views = 2 + i % 2
        row = {"id": 1000 + 7 * i, "split": "train", "category": "rigid", "n_images": n_views}
        for k in range(1, n_views + 1):
            row[f"images{k}"] = rng.integers(0, 256, (size, size + k, 3), dtype=np.uint8)
            mask = np.zeros((size, size + k), dtype=bool)
            mask[5 : 5 + i + 3, 4:20] = True
            row[f"masks{k}"] = mask
            row[f"prompts{k}"] = f"identity {i} view {k}"
        rows.append(row)
    return rows


def write_identities(root: str, rows: list[dict], per_shard: int, **writer_kwargs) -> list:
    entries = []
    for k, start in enumerate(range(0, len(rows), per_shard)):
        with ShardWriter(root, "identities", shard_path("identities", k), "hash-a", **writer_kwargs) as writer:
            for row in rows[start : start + per_shard]:
                writer.write(row)
        entries.append(writer.entry)
    commit_shards(root, entries)
    return entries


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "ds")
    return f"memory://nearid-test-{uuid.uuid4().hex}/ds"


def test_round_trip_through_reader_is_bit_identical(root: str) -> None:
    rows = make_rows(7)
    entries = write_identities(root, rows, per_shard=3, row_group_rows=2)
    reader = TableReader(root, "identities")
    assert len(reader) == 7 and [e.rows for e in entries] == [3, 3, 1]
    back = list(reader.iter_rows())
    assert [r["id"] for r in back] == [r["id"] for r in rows]
    for original, decoded in zip(rows, back, strict=True):
        for k in range(1, 4):
            if f"images{k}" not in original:
                assert decoded[f"images{k}"] is None and decoded[f"masks{k}"] is None
                continue
            assert np.array_equal(np.asarray(decoded[f"images{k}"]), original[f"images{k}"])
            assert np.array_equal(decoded[f"masks{k}"], original[f"masks{k}"])
            assert decoded[f"prompts{k}"] == original[f"prompts{k}"]
    # lookup by id reads the right row from the right shard
    looked_up = reader.get(rows[5]["id"])
    assert np.array_equal(np.asarray(looked_up["images2"]), rows[5]["images2"])
    with pytest.raises(KeyError, match="not in table"):
        reader.get(-1)
    assert reader.ids().tolist() == [r["id"] for r in rows]


def test_manifest_records_checksums_sizes_and_row_groups(root: str) -> None:
    entries = write_identities(root, make_rows(5), per_shard=5, row_group_rows=2)
    manifest = load_manifest(root)
    fs, base = resolve(root)
    entry = manifest.shards[entries[0].path]
    assert entry.rows == 5 and entry.config_hash == "hash-a"
    assert entry.bytes == fs.size(f"{base}/{entry.path}")
    assert entry.sha256 == sha256_file(fs, f"{base}/{entry.path}")
    assert manifest.counts()["identities"] == {"shards": 1, "rows": 5, "bytes": entry.bytes}
    assert manifest.is_complete(root, entry.path, "hash-a", verify_checksum=True)
    assert not manifest.is_complete(root, entry.path, "hash-b")
    with fs.open(f"{base}/{entry.path}", "rb") as f:
        assert pq.ParquetFile(f).metadata.num_row_groups == 3  # 2 + 2 + 1 rows: streamable in small pieces


def test_datasets_load_gives_decoded_image_columns(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    # offline mode makes `datasets` refuse every URL, even memory://, which reaches no network
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    rows = make_rows(4)
    write_identities(root, rows, per_shard=2)
    ds = datasets.load_dataset("parquet", data_files=data_files(root, "identities"), split="train")
    assert isinstance(ds.features["images1"], datasets.Image)
    assert isinstance(ds.features["masks3"], datasets.Image)
    expected = {"id", "split", "n_images", "images1", "images2", "images3", "masks1", "masks2", "masks3", "prompts1"}
    assert expected <= set(ds.column_names)
    for original, loaded in zip(rows, ds, strict=True):
        assert loaded["id"] == original["id"]
        assert np.array_equal(np.asarray(loaded["images2"]), original["images2"])
        assert np.array_equal(np.asarray(loaded["masks1"]) > 0, original["masks1"])


def test_writer_error_leaves_nothing_behind(tmp_path) -> None:
    root = str(tmp_path / "ds")
    with pytest.raises(ValueError, match="required"):
        with ShardWriter(root, "identities", shard_path("identities", 0), "h") as writer:
            writer.write(make_rows(1)[0])
            writer.write({"id": 5, "n_images": 2})  # no split
    assert list((tmp_path / "ds" / "identities").iterdir()) == []
    assert load_manifest(root, missing_ok=True).shards == {}


def test_writer_refuses_bad_rows(tmp_path) -> None:
    root = str(tmp_path / "ds")
    row = make_rows(1)[0]
    with ShardWriter(root, "identities", shard_path("identities", 0), "h") as writer:
        with pytest.raises(ValueError, match="unknown columns"):
            writer.write({**row, "colour": "red"})
        with pytest.raises(ValueError, match="must be PNG"):
            writer.write({**row, "images1": b"\xff\xd8\xff\xe0 jpeg bytes"})
        writer.write(row)
        with pytest.raises(ValueError, match="duplicate id"):
            writer.write(row)
    with pytest.raises(ValueError, match="must be 'identities/<name>.parquet'"):
        ShardWriter(root, "identities", "elsewhere/shard-00000.parquet", "h")
    with pytest.raises(ValueError, match="unknown table"):
        ShardWriter(root, "positives", "positives/shard-00000.parquet", "h")


def test_data_files_are_urls_off_local_disk() -> None:
    root = f"memory://nearid-test-{uuid.uuid4().hex}/ds"
    write_identities(root, make_rows(2), per_shard=2)
    assert data_files(root, "identities") == [
        f"{root.replace('memory://', 'memory:///')}/identities/shard-00000.parquet"
    ]
