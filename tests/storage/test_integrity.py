"""Dataset integrity the way a fleet meets it: simultaneous writers, killed parents, partial roots, failed
regenerations and two fresh runs that must give the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from storage import TableReader, load_manifest
from storage.fs import resolve, sha256_file
from storage.validate import validate


CLI = [sys.executable, "-m", "nearid.cli", "-q"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def nearid(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env or ENV, check=check)


def errors(root: str, **kwargs) -> list[str]:
    return [p.code for p in validate(root, progress=False, **kwargs) if p.severity == "error"]


def shard_digests(root: str) -> dict[str, str]:
    return {path: entry.sha256 for path, entry in load_manifest(root).shards.items()}


@pytest.fixture
def small_root(tmp_path: Path) -> str:
    root = str(tmp_path / "data")
    nearid(
        *"curate --source procedural --identities 48 --image-size 64 --shard-size 1 --no-progress".split(),
        "--out",
        root,
    )
    return root


def test_two_simultaneous_generators_leave_a_valid_root(small_root: str) -> None:
    for trial in range(3):  # 48 shards each: 144 chances for the two writers to cross
        args = ["generate", "--data", small_root, "--config", "procedural", "--set", "resolution=64", "--no-progress"]
        if trial:
            args.append("--force")
        procs = [
            subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV) for _ in range(2)
        ]
        for proc in procs:
            _, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr.decode()[-2000:]
        assert errors(small_root) == [], f"trial {trial}"
        assert len(load_manifest(small_root).table("distractors/procedural")) == 48


def test_a_killed_curation_leaves_a_root_that_validate_calls_incomplete(tmp_path: Path) -> None:
    root = str(tmp_path / "data")
    args = ["curate", "--source", "procedural", "--identities", "160", "--image-size", "160", "--shard-size", "8"]
    proc = subprocess.Popen([*CLI, *args, "--out", root, "--no-progress"], stdout=subprocess.DEVNULL, env=ENV)
    manifest = Path(root) / "manifest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 2:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert "incomplete" in errors(root)
    result = nearid("validate", root, "--no-progress", check=False)
    assert result.returncode == 1 and "incomplete" in result.stdout
    assert nearid("validate", root, "--no-progress", "--allow-partial", check=False).returncode == 0


def test_killing_the_parent_kills_its_pool_workers(tmp_path: Path) -> None:
    args = ["curate", "--source", "procedural", "--identities", "400", "--image-size", "192", "--shard-size", "8"]
    proc = subprocess.Popen(
        [*CLI, *args, "--workers", "2", "--out", str(tmp_path / "data"), "--no-progress"],
        stdout=subprocess.DEVNULL,
        env=ENV,
    )
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(parent.children(recursive=True)) < 2:
        time.sleep(0.05)
    children = parent.children(recursive=True)
    assert len(children) >= 2, "the pool did not start"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphaned workers still running: {[p.pid for p in alive]}"


def test_two_fresh_runs_give_the_same_bytes(tmp_path: Path) -> None:
    roots = []
    for seed in ("1", "2"):
        root = str(tmp_path / f"run{seed}")
        env = {**ENV, "PYTHONHASHSEED": seed}
        curate = "curate --source procedural --identities 18 --image-size 64 --shard-size 6 --no-progress"
        nearid(*curate.split(), "--out", root, env=env)
        nearid(*"generate --config procedural --set resolution=64 --no-progress".split(), "--data", root, env=env)
        roots.append(root)
    assert shard_digests(roots[0]) == shard_digests(roots[1])


def run_and_kill(args: list[str], root: str, table: str, committed: int) -> None:
    """Start ``nearid ARGS``, SIGKILL it once ``table`` has ``committed`` shards in the manifest."""
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    manifest = Path(root) / "manifest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            shards = json.loads(manifest.read_text())["shards"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            shards = {}
        if sum(1 for path in shards if path.startswith(table + "/")) >= committed:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed; make it larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize("committed", [1, 5])
def test_killed_generation_resumes_to_the_same_bytes(small_root: str, tmp_path: Path, committed: int) -> None:
    clean = str(tmp_path / "clean")
    nearid(
        *"curate --source procedural --identities 48 --image-size 64 --shard-size 1 --no-progress".split(),
        "--out",
        clean,
    )
    generate = "generate --config procedural --set resolution=64 --no-progress".split()
    run_and_kill([*generate, "--data", small_root], small_root, "distractors/procedural", committed)
    assert "incomplete" in errors(small_root)
    nearid(*generate, "--data", small_root)
    nearid(*generate, "--data", clean)
    assert shard_digests(small_root) == shard_digests(clean)
    assert errors(small_root) == []
    leftovers = [p.name for p in Path(small_root, "distractors", "procedural").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # the killed writer's temporary file was removed by the rerun


@pytest.mark.parametrize("committed", [1, 6])
def test_killed_curation_resumes_to_the_same_bytes(tmp_path: Path, committed: int) -> None:
    killed, clean = str(tmp_path / "killed"), str(tmp_path / "clean")
    curate = "curate --source procedural --identities 120 --image-size 192 --shard-size 8 --no-progress".split()
    run_and_kill([*curate, "--out", killed], killed, "identities", committed)
    shards = load_manifest(killed).table("identities")
    assert committed <= len(shards) < 15
    fs, base = resolve(killed)
    assert all(sha256_file(fs, f"{base}/{entry.path}") == entry.sha256 for entry in shards)  # listed = whole
    nearid(*curate, "--out", killed)
    nearid(*curate, "--out", clean)
    assert shard_digests(killed) == shard_digests(clean)
    resumed = load_manifest(killed)
    assert len(resumed.table("identities")) == 15 and len(resumed.table("rejects")) == 1
    assert len(TableReader(killed, "identities")) == 120
    assert errors(killed) == []
