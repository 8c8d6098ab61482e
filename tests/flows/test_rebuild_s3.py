"""``rebuild-dataset`` on an ``s3://`` root, under a real Prefect API, against moto's S3 server on loopback.

Curation writes in this process, generation in ``nearid generate`` child processes (they find the server through
``AWS_ENDPOINT_URL``, which the ``s3_endpoint`` fixture sets), validation reads everything back, and publishing
writes the version record next to the manifest: every step on the bucket, nothing on a local disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from storage import load_manifest
from storage.fs import join, resolve
from storage.validate import validate
from tests.storage.s3_server import S3Endpoint


def test_rebuild_on_an_s3_root(prefect_api, s3_endpoint: S3Endpoint, s3_root: str, tmp_path: Path) -> None:
    from flows.rebuild import rebuild_dataset

    params = {
        "root": s3_root,
        "configurations": ["procedural"],
        "source": "procedural",
        "identities": 8,
        "image_size": 64,
        "shard_size": 2,
        "retries": 0,
        "slot_dir": str(tmp_path / "slots"),
    }
    first = rebuild_dataset(**params)
    assert first["curated"]["shards_written"] == 4 and first["generated"]["shards_written"] == 4
    assert first["validation"]["errors"] == 0 and first["version_changed"]
    assert {t: (c["shards"], c["rows"]) for t, c in first["counts"].items()} == {
        "identities": (4, 8),
        "distractors/procedural": (4, 8),
        "rejects": (1 + 4, 0),
    }

    assert [str(p) for p in validate(s3_root, progress=False)] == []
    manifest = load_manifest(s3_root)
    assert manifest.version == first["version"]
    assert all(entry.fingerprint.startswith("s3:") for entry in manifest.shards.values())
    fs, base = resolve(s3_root)
    record = json.loads(fs.cat_file(join(base, f"versions/{first['version']}.json")))
    assert record["version"] == first["version"] and set(record["shards"]) == set(manifest.shards)
    for path, entry in manifest.shards.items():
        assert record["shards"][path]["sha256"] == entry.sha256
    assert not fs.glob(join(base, "**/.*.tmp")) and not fs.exists(join(base, ".manifest.lock"))
    assert not Path(s3_root.split("://", 1)[1]).exists()  # nothing went to a local folder of that name

    second = rebuild_dataset(**params)  # complete shards are recognised by their ETag fingerprints
    assert second["curated"]["shards_written"] == 0 and second["generated"]["shards_written"] == 0
    assert second["version"] == first["version"] and not second["version_changed"]
