"""Temporary files: a later run removes those of dead writers and never those of live ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from storage.fs import remove_dead_temps, resolve, temp_name


def test_only_dead_writers_temporary_files_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "distractors" / "x"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: its pid is free (or reused by something else, then it is kept)
    mine = Path(temp_name(str(folder / "shard-00000.parquet")))
    theirs = folder / f".shard-00001.parquet.{dead_pid}-abcdefabcdef.tmp"
    legacy = folder / ".shard-00002.parquet.abcdefabcdef.tmp"  # no pid: nobody can tell, so it stays
    for path in (mine, theirs, legacy):
        path.write_bytes(b"partial")
    assert f".{os.getpid()}-" in mine.name
    fs, base = resolve(str(tmp_path))
    removed = remove_dead_temps(fs, f"{base}/distractors/x")
    assert [Path(p).name for p in removed] == [theirs.name]
    assert mine.exists() and legacy.exists() and not theirs.exists()
    assert remove_dead_temps(fs, f"{base}/nowhere") == []
