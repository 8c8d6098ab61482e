"""A writer killed with SIGKILL leaves nothing that the manifest or the reader treats as complete (killed CLI runs
that resume: tests/storage/test_integrity.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from storage import TableReader, load_manifest
from storage.validate import validate


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from storage import ShardWriter, commit_shards, shard_path

    root = sys.argv[1]
    rng = np.random.default_rng(0)

    def row(i):
        mask = np.zeros((32, 32), dtype=bool); mask[4:20, 6:22] = True
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        return {"id": i, "split": "train", "n_images": 2, "images1": image, "images2": image,
                "masks1": mask, "masks2": mask}

    for shard in range(2):
        writer = ShardWriter(root, "identities", shard_path("identities", shard), "h", row_group_rows=1)
        for i in range(6):
            writer.write(row(shard * 100 + i))
            if shard == 1 and i == 3:
                print("MID-SHARD", flush=True)
                time.sleep(600)  # killed here, with four row groups of shard 1 on disk
        commit_shards(root, [writer.close()])
    """
)


def test_sigkill_mid_shard_leaves_no_complete_looking_file(tmp_path: Path) -> None:
    root = str(tmp_path / "ds")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, root], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "MID-SHARD"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    table_dir = tmp_path / "ds" / "identities"
    partial = [p for p in table_dir.iterdir() if p.name.endswith(".tmp")]
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # bytes of shard 1 did reach the disk
    assert not (table_dir / "shard-00001.parquet").exists()
    manifest = load_manifest(root)
    assert list(manifest.shards) == ["identities/shard-00000.parquet"]
    assert len(TableReader(root, "identities")) == 6
    assert sorted(TableReader(root, "identities").ids().tolist()) == list(range(6))

    problems = validate(root, progress=False)
    assert [p.code for p in problems if p.severity == "error"] == []
    assert [p.code for p in problems] == ["partial-file"]

    # a rerun (here: the same script, unkilled, for shard 1) completes the shard
    rerun = KILLED_WRITER.replace("time.sleep(600)", "pass")
    subprocess.run([sys.executable, "-c", rerun, root], check=True, capture_output=True)
    manifest = load_manifest(root)
    assert sorted(manifest.shards) == ["identities/shard-00000.parquet", "identities/shard-00001.parquet"]
    assert len(TableReader(root, "identities")) == 12
    assert [p for p in validate(root, progress=False) if p.severity == "error"] == []
