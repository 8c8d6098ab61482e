"""Processes the object-store tests start: a writer committing many shards, and a lock holder to be killed.

``python -m tests.storage.s3_workers commit ROOT WRITER COUNT START_AT``: wait until the epoch time ``START_AT``
(so two writers start together), then commit ``COUNT`` staged shards ``t/w<WRITER>-<i>.bin`` one at a time,
each commit also recording the writer's plan so far.

``python -m tests.storage.s3_workers hold ROOT NAME LEASE_S``: take ``object_lock(ROOT, NAME)``, print ``held``
and keep it (renewing the lease) until killed.
"""

from __future__ import annotations

import hashlib
import sys
import time


def commit(root: str, writer: str, count: int, start_at: float) -> None:
    from storage.fs import join, resolve, temp_name
    from storage.manifest import ShardEntry, commit_shards

    fs, base = resolve(root)
    time.sleep(max(0.0, start_at - time.time()))
    plan: dict[str, str] = {}
    for index in range(count):
        path = f"t/w{writer}-{index:03d}.bin"
        data = f"{writer}:{index}\n".encode() * 8
        staged = temp_name(path)
        fs.pipe_file(join(base, staged), data)
        entry = ShardEntry(
            path=path,
            table="t",
            rows=8,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            config_hash="c0",
            staged=staged,
        )
        plan[path] = "c0"
        commit_shards(root, [entry], plans={f"w{writer}": plan})
    print("done", flush=True)


def hold(root: str, name: str, lease_s: float) -> None:
    from storage.object_lock import object_lock

    with object_lock(root, name, timeout_s=30, lease_s=lease_s):
        print("held", flush=True)
        while True:
            time.sleep(1)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "commit":
        commit(args[0], args[1], int(args[2]), float(args[3]))
    elif command == "hold":
        hold(args[0], args[1], float(args[2]))
    else:
        raise SystemExit(f"unknown command {command!r}")
