"""A slow flow shaped like ``regenerate`` for the fleet tests: a parent flow, a subflow on a thread-pool task
runner, and a task that runs a long child process through :func:`flows.gpu.run_in_slot`.

The child starts a grandchild in its process group, writes both pids to ``<marker_dir>/pids``, prints a line and
sleeps; the tests deploy this flow on a real server, then kill the worker or cancel the run and check that no
process is left behind.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from flows.gpu import SlotPool, run_in_slot
from flows.logs import run_logger


CHILD = """
import os, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
pids = os.path.join(sys.argv[1], "pids")
with open(pids + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {grandchild.pid}\\n")
os.replace(pids + ".tmp", pids)
print("child running", flush=True)
time.sleep(float(sys.argv[2]))
"""


@task(name="slow-shard", cache_policy=NO_CACHE)
def slow_shard(marker_dir: str, seconds: float) -> float:
    """One long child process on a slot, as a shard task runs ``nearid generate``."""
    pool = SlotPool.from_environment()
    result = run_in_slot(
        pool,
        lambda _slot: [sys.executable, "-c", CHILD, marker_dir, str(seconds)],
        timeout_s=seconds + 60,
        log=run_logger(),
        label="slow-shard",
    )
    return result.seconds


@flow(name="slow-shards")
def slow_shards_flow(marker_dir: str, seconds: float) -> float:
    """The subflow that holds the shard task (regenerate's ``generate-shards``)."""
    future = slow_shard.submit(marker_dir, seconds)
    wait([future])
    return future.result()


@flow(name="slow")
def slow_flow(marker_dir: str, seconds: float = 300.0) -> float:
    """Run one slow shard in a subflow on a one-thread pool, the way ``regenerate`` runs its shards."""
    Path(marker_dir).mkdir(parents=True, exist_ok=True)
    runner = ThreadPoolTaskRunner(max_workers=1)
    return slow_shards_flow.with_options(task_runner=runner)(marker_dir, seconds)
