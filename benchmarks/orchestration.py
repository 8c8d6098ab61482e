"""Prefect's overhead per shard task and per flow on the embedded default, against one real shard, and what model
loads cost per shard with and without shard groups.

Everything is measured in one run, in one fresh embedded Prefect home: the shard's work in process
(``generate_distractors`` with the ``procedural`` generator on 512 px views, one identities shard),
the same shard through the child process the regenerate task starts (``nearid generate``), an empty
flow, a flow of no-op tasks, and the ``regenerate`` flow itself on that shard. Then tiny FLUX Fill on
``--load-shards`` shards through the ``regenerate`` flow: one group (one child, one model load) against one group
per shard (a child and a load each), and the share of a group's time its one load takes. Prints each overhead and
its share of the shard's work; timings are the best of several runs.
Run: python benchmarks/orchestration.py [--identities 64] [--tasks 50] [--load-shards 4]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


# run as a script, this file's folder comes first on sys.path and could shadow the packages
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from flows.settings import use_embedded_default  # noqa: E402  (imports no Prefect)


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls (the least disturbed by other load on the machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def until_recorded(tasks_flow: Callable, n: int, timeout_s: float = 300) -> tuple[float, float]:
    """Seconds from calling a flow of ``n`` tasks until it returns, and until the API lists all ``n``
    task runs as completed (task states reach the server as events, recorded after the flow returns)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterFlowRunId,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )

    start = time.perf_counter()
    run_id = tasks_flow(n, return_state=True).state_details.flow_run_id
    returned = time.perf_counter() - start
    completed = TaskRunFilterState(type=TaskRunFilterStateType(any_=["COMPLETED"]))
    task_filter = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id]), state=completed)
    with get_client(sync_client=True) as client:
        while len(client.read_task_runs(task_run_filter=task_filter, limit=n)) < n:
            if time.perf_counter() - start > timeout_s:
                raise TimeoutError(f"the server recorded fewer than {n} task runs in {timeout_s}s")
            time.sleep(0.05)
    return returned, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=64, help="identities in the one shard (default shard: 256)")
    parser.add_argument("--tasks", type=int, default=50, help="no-op tasks in the task-overhead flow")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the shard and of the flow (best is kept)")
    parser.add_argument("--load-shards", type=int, default=4, help="shards of the model-load comparison")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nearid-orchestration-bench-"))
    use_embedded_default(work / "run")  # before Prefect is imported: a fresh embedded home

    from nearid.common.logs import setup_logging

    setup_logging(-1)
    from prefect import flow, task

    from flows.commands import run_streaming
    from flows.gpu import Slot
    from flows.regenerate import generate_command, regenerate_flow
    from flows.shards import ShardRunOptions, plan_shards
    from generators.run import generate_distractors
    from nearid.common.procedural import ProceduralConfig
    from nearid.curation.procedural import curate_procedural
    from storage import load_manifest

    root = str(work / "data")
    config = ProceduralConfig(identities=args.identities, image_size=512)
    curate_procedural(root, config, shard_size=args.identities, progress=False)

    def in_process() -> None:
        generate_distractors(root, ["procedural"], shards="0", force=True, progress=False)

    in_process()  # warm the page cache and imports
    (job,) = plan_shards(root, ["procedural"], "0")
    slot = Slot("cpu-0", None)
    # the shard is complete: the child only starts
    command = generate_command(job.config, [job.index], ShardRunOptions(root), slot)
    child_s = timed(lambda: run_streaming(command, env=slot.env(), timeout_s=600), repeat=3)

    @flow
    def empty() -> None:
        return None

    @task
    def noop(i: int) -> int:
        return i

    @flow
    def tasks(n: int) -> int:
        return sum(f.result() for f in [noop.submit(i) for i in range(n)])

    first_flow_s = timed(empty)  # starts the embedded server (migrations on a fresh home)
    flow_s = timed(empty, repeat=5)
    tasks(args.tasks)
    tasks_s, recorded_s = until_recorded(tasks, args.tasks)
    task_s = max(0.0, tasks_s - flow_s) / args.tasks
    recorded_s = max(0.0, recorded_s - flow_s) / args.tasks

    def regenerate() -> None:
        options = {"shards": "0", "force": True, "slot_dir": str(work / "slots"), "validate_at_end": False}
        regenerate_flow(root=root, configurations=["procedural"], **options)

    shard_runs, regenerate_runs = [], []
    for _ in range(args.repeat):  # interleaved, so slow phases of the machine hit both alike
        shard_runs.append(timed(in_process))
        regenerate_runs.append(timed(regenerate))
    shard_s, regenerate_s = min(shard_runs), min(regenerate_runs)

    images = sum(e.stats["images_written"] for e in load_manifest(root).table("distractors/procedural"))
    print(f"shard: {args.identities} identities, {images} distractor images at 512 px (procedural generator)")
    print(f"  in process (the work):                {shard_s:7.2f} s")
    print("  child process start (nearid generate on a complete shard: interpreter, imports, plan):")
    print(f"  {'':37s} {child_s:7.2f} s   = {child_s / shard_s:6.1%} of the shard")
    print("Prefect, embedded default (SQLite, heartbeats on):")
    print(f"  first flow (starts the server):       {first_flow_s:7.2f} s")
    print(f"  per flow:                             {flow_s:7.3f} s   = {flow_s / shard_s:6.1%} of the shard")
    label = f"per task ({args.tasks} no-op tasks):"
    print(f"  {label:37s} {task_s * 1000:7.1f} ms  = {task_s / shard_s:6.2%} of the shard (until the flow returns)")
    label = "per task, until the server recorded it:"
    print(f"  {label:37s} {recorded_s * 1000:7.1f} ms  = {recorded_s / shard_s:6.2%} of the shard")
    print(f"  regenerate flow on the shard:         {regenerate_s:7.2f} s   (plan, 2 flows, 1 task, 1 child)")
    overhead = regenerate_s - shard_s
    print(f"  its overhead over the in-process work:{overhead:7.2f} s   = {overhead / shard_s:6.1%} of the shard")
    print(
        f"at the default 256 identities per shard the shard's work is about {shard_s * 256 / args.identities:.0f} s "
        f"on this CPU; a real GPU configuration takes minutes to hours per shard"
    )
    model_loads(work, args.load_shards, args.repeat)
    shutil.rmtree(work, ignore_errors=True)


def model_loads(work: Path, shards: int, repeat: int) -> None:
    """Tiny FLUX Fill: one shard group (one child, one load) against one group per shard, through the regenerate
    flow and through the ``nearid generate`` children themselves (whose summary line gives the load time)."""
    from flows.regenerate import regenerate_flow
    from nearid.common.procedural import ProceduralConfig
    from nearid.curation.procedural import curate_procedural
    from nearid.offline.tiny_models import build_tiny_models

    models, root = work / "models", str(work / "load-data")
    build_tiny_models(models)
    curate_procedural(root, ProceduralConfig(identities=4 * shards, image_size=256), shard_size=4, progress=False)
    fast = {"steps": 4, "resolution": 128}
    common = {"root": root, "configurations": ["flux-fill-512"], "force": True, "model_dir": str(models)}
    common |= {"overrides": fast, "slot_dir": str(work / "slots"), "validate_at_end": False}
    grouped, per_shard = [], []
    for _ in range(repeat):
        grouped.append(timed(lambda: regenerate_flow(**common)))
        per_shard.append(timed(lambda: regenerate_flow(shards_per_task=1, **common)))

    def children(selections: list[str]) -> tuple[float, float, int]:
        """Wall seconds, model-load seconds and loads of ``nearid generate`` children, one per selection."""
        wall = load = 0.0
        loads = 0
        for selection in selections:
            cmd = [sys.executable, "-m", "nearid.cli", "-q", "generate", "--data", root, "--config", "flux-fill-512"]
            cmd += ["--shards", selection, "--force", "--model-dir", str(models)]
            cmd += [arg for key, value in fast.items() for arg in ("--set", f"{key}={value}")]
            start = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            wall += time.perf_counter() - start
            count, seconds = re.search(r"models loaded (\d+)x, ([\d.]+)s", out).groups()
            loads, load = loads + int(count), load + float(seconds)
        return wall, load, loads

    one = children([f"0-{shards - 1}"])
    each = children([str(k) for k in range(shards)])
    print(f"model loads: tiny FLUX Fill, {shards} shards of 4 identities at 128 px, 4 steps, 1 CPU slot")
    print(f"  regenerate flow, one group:           {min(grouped):7.2f} s")
    print(f"  regenerate flow, a group per shard:   {min(per_shard):7.2f} s   = {min(per_shard) / min(grouped):.2f}x")
    for label, (wall, load, loads) in (("one child, all shards", one), ("a child per shard", each)):
        print(
            f"  {label + ':':37s} {wall:7.2f} s   {loads / shards:.2f} loads per shard, "
            f"load {load:.2f} s = {load / wall:.1%} of the children's time"
        )


if __name__ == "__main__":
    main()
