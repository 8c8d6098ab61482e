"""Commits and locks on a real S3 API (moto's server on loopback, tests/storage/s3_server.py), from real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from storage import load_manifest, s3
from storage.fs import join, resolve
from storage.manifest import (
    MANIFEST_LOCK_NAME,
    ConcurrentCommitError,
    ShardEntry,
    commit_shards,
    manifest_lock,
    save_manifest,
)
from storage.object_lock import LockTimeout, object_lock, supports_locking
from tests.storage.s3_server import REPO, S3Endpoint


COMMITS_PER_WRITER = 30
WRITERS_TIMEOUT_S = 120


def _run_together(commands: list[list[str]], log_dir: Path, timeout_s: float) -> list[str]:
    """Start every command, wait for all (bounded), kill any left running; return each one's output."""
    procs = []
    try:
        for index, cmd in enumerate(commands):
            log = open(log_dir / f"proc-{index}.log", "wb")  # noqa: SIM115 - closed right after the start
            procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    outputs = [(log_dir / f"proc-{index}.log").read_text(errors="replace") for index in range(len(commands))]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output
    return outputs


def test_two_writer_processes_lose_no_commit(s3_root: str, tmp_path: Path) -> None:
    start_at = f"{time.time() + 4:.3f}"  # both are importing by then: their commits interleave
    worker = [sys.executable, "-m", "tests.storage.s3_workers", "commit", s3_root]
    commands = [[*worker, writer, str(COMMITS_PER_WRITER), start_at] for writer in ("a", "b")]
    _run_together(commands, tmp_path, WRITERS_TIMEOUT_S)

    manifest = load_manifest(s3_root)
    expected = {f"t/w{writer}-{index:03d}.bin" for writer in "ab" for index in range(COMMITS_PER_WRITER)}
    assert set(manifest.shards) == expected, f"lost: {sorted(expected - set(manifest.shards))}"
    assert manifest.generation == 2 * COMMITS_PER_WRITER
    order = [path[3] for path in sorted(manifest.shards, key=lambda p: manifest.shards[p].generation)]
    # both committed before and after the other (the lock is not fair: a holder often commits several in a row)
    assert sum(a != b for a, b in zip(order, order[1:], strict=False)) >= 2, f"the writers did not overlap: {order}"
    assert sorted(entry.generation for entry in manifest.shards.values()) == list(range(1, 2 * COMMITS_PER_WRITER + 1))
    for writer in "ab":
        assert len(manifest.plans[f"w{writer}"]) == COMMITS_PER_WRITER
    fs, base = resolve(s3_root)
    for path, entry in manifest.shards.items():
        assert fs.cat_file(join(base, path)) == f"{path[3]}:{int(path[5:8])}\n".encode() * 8, path
        assert entry.bytes == fs.size(join(base, path))
    assert json.loads(fs.cat_file(join(base, "manifest.json")))["generation"] == 2 * COMMITS_PER_WRITER
    assert not fs.exists(join(base, ".manifest.lock"))


def test_fixture_points_child_processes_at_the_server(s3_endpoint: S3Endpoint, s3_root: str) -> None:
    code = "import fsspec, sys; fs = fsspec.filesystem('s3'); fs.pipe_file(sys.argv[1] + '/x', b'child')"
    subprocess.run([sys.executable, "-c", code, s3_root], check=True, timeout=60, env=None)
    fs, base = resolve(s3_root)
    assert fs.cat_file(join(base, "x")) == b"child"
    assert s3_endpoint.url.startswith("http://127.0.0.1:")


def _start_holder(root: str, name: str, lease_s: float, log: Path) -> subprocess.Popen:
    """A process that takes ``object_lock(root, name)`` and keeps it until killed; returns once it holds it."""
    with open(log, "wb") as out:
        cmd = [sys.executable, "-m", "tests.storage.s3_workers", "hold", root, name, str(lease_s)]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "held" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=30)
            raise AssertionError(f"the holder never took the lock:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


def test_lock_of_a_killed_holder_is_taken_over_after_its_lease_and_not_before(s3_root: str, tmp_path: Path) -> None:
    lease_s = 4
    name = ".locks/distractors/x/shard-00000.parquet.lock"
    fs, base = resolve(s3_root)
    holder = _start_holder(s3_root, name, lease_s, tmp_path / "holder.log")
    try:
        time.sleep(lease_s + 1.5)  # longer than a lease: the live holder's renewals keep it
        with pytest.raises(LockTimeout, match=rf"lock .*{name} still held after 1s by pid {holder.pid} on "):
            with object_lock(s3_root, name, timeout_s=1.0, lease_s=lease_s):
                pass
        holder.kill()
        holder.wait(timeout=30)
        last_renewal = s3.get(fs, join(base, name))
        assert last_renewal is not None and json.loads(last_renewal.data)["pid"] == holder.pid
        with pytest.raises(LockTimeout, match=f"pid {holder.pid}"):  # dead, but its lease still runs
            with object_lock(s3_root, name, timeout_s=1.0, lease_s=lease_s):
                pass
        started = time.monotonic()
        with object_lock(s3_root, name, timeout_s=lease_s + 10, lease_s=lease_s) as lock:
            waited_s = time.monotonic() - started
            ours = s3.get(fs, join(base, name))
            assert ours is not None and json.loads(ours.data)["owner"] == lock.owner
        assert not lock.lost
        taken_after_s = (ours.last_modified - last_renewal.last_modified).total_seconds()
        assert lease_s <= taken_after_s <= lease_s + 4, taken_after_s  # server clock, whole seconds
        assert waited_s < lease_s + 4
        assert not fs.exists(join(base, name))  # released
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)


def test_threads_exclude_each_other_through_the_bucket(s3_root: str) -> None:
    inside: list[int] = []
    overlaps: list[int] = []

    def work(worker: int) -> None:
        for _ in range(4):
            with object_lock(s3_root, "shared.lock", timeout_s=60, lease_s=10):
                inside.append(worker)
                if len(inside) > 1:
                    overlaps.append(worker)
                time.sleep(0.01)
                inside.remove(worker)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert overlaps == []


def test_a_lock_taken_over_is_neither_renewed_nor_deleted_by_its_old_holder(s3_root: str) -> None:
    fs, base = resolve(s3_root)
    path = join(base, "x.lock")
    with object_lock(s3_root, "x.lock", timeout_s=5, lease_s=3) as lock:
        fs.pipe_file(path, b'{"owner": "someone else"}')  # what a takeover after a stall looks like
        deadline = time.monotonic() + 10
        while not lock.lost and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lock.lost
    assert fs.cat_file(path) == b'{"owner": "someone else"}'


def test_a_stalled_writer_cannot_overwrite_a_newer_manifest(s3_root: str) -> None:
    stalled = load_manifest(s3_root, missing_ok=True)  # read, then its lease ran out
    entry = ShardEntry(path="t/a.bin", table="t", rows=1, bytes=1, sha256="0" * 64, config_hash="c")
    fs, base = resolve(s3_root)
    fs.pipe_file(join(base, "t/a.bin"), b"a")
    commit_shards(s3_root, [entry])
    stalled.plans["late"] = {"t/b.bin": "c"}
    with pytest.raises(ConcurrentCommitError, match="changed after this writer read it"):
        save_manifest(s3_root, stalled)
    stale = load_manifest(s3_root)
    commit_shards(s3_root, [], plans={"p": {}})
    with pytest.raises(ConcurrentCommitError):
        save_manifest(s3_root, stale)
    final = load_manifest(s3_root)
    assert set(final.shards) == {"t/a.bin"} and set(final.plans) == {"p"} and final.generation == 2


def test_supports_locking(s3_root: str, tmp_path: Path) -> None:
    assert supports_locking(s3_root)
    assert supports_locking(str(tmp_path))
    assert not supports_locking("memory://nearid-lock-test")
    with pytest.raises(ValueError, match="object locks need an s3:// root"):
        with object_lock("memory://nearid-lock-test", "x.lock"):
            pass
    with pytest.raises(ValueError, match="lease_s must be at least"):
        with object_lock(s3_root, "x.lock", lease_s=1):
            pass
    fs, base = resolve(s3_root)
    assert not fs.exists(base)  # the probe cleaned up after itself


def test_a_commit_waits_a_bounded_time_for_the_manifest_lock(s3_root: str) -> None:
    with object_lock(s3_root, MANIFEST_LOCK_NAME, timeout_s=5, lease_s=10):
        started = time.monotonic()
        message = rf"lock s3://.*/\.manifest\.lock still held after 1s by pid {os.getpid()} "
        with pytest.raises(TimeoutError, match=message):
            with manifest_lock(s3_root, timeout_s=1):
                pass
        assert 1 <= time.monotonic() - started < 3
    with manifest_lock(s3_root, timeout_s=1):  # released: free at once
        pass
