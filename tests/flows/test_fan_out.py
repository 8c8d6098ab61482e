"""A fleet on a real Prefect server: the `control` pool runs the orchestrating flows, two `gpu` workers (each with
its own slot folder, as on two hosts) take their shard groups through the `regenerate/shards` deployment.

A rebuild's groups are submitted together and shared, one per worker, each loading the model once, and the
dataset validates and gets a version. A worker killed in the middle of a group: once its run is Crashed (what the
shipped automation does after the heartbeats stop), the group is resubmitted, the other worker finishes it, and no
shard is lost or made twice. Cancelling the submitting run cancels the groups' runs.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage import load_manifest
from storage.validate import validate
from tests.flows.test_server_integration import (
    PREFECT,
    REPO,
    Processes,
    _await_final,
    _child_runs_of,
    _descendants,
    _kill_tree,
    _wait_for,
    _worker_env,
    prefect_server,
)


CONFIG = "flux-fill-512"
FAST = {"steps": 2, "resolution": 64}

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _start_worker(procs: Processes, name: str, pool: str, limit: int, env: dict[str, str]) -> None:
    cmd = [PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--limit", str(limit), "--name", name]
    procs.start(name, cmd, env)


def _online_workers(client: object, pool: str) -> list[str]:
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        return sorted(w.name for w in client.read_workers_for_work_pool(pool) if w.status == "ONLINE")
    except (ObjectNotFound, PrefectHTTPStatusError):  # the pool does not exist before its first worker starts
        return []


@contextmanager
def fleet(tmp_path: Path, deployments: list[str]) -> Iterator[tuple[object, Processes, dict[str, str]]]:
    """A server, a control worker and two GPU workers (``gpu-a``, ``gpu-b``), and ``deployments`` from prefect.yaml;
    yields a client, the processes (all stopped on exit) and the environment of a client of that server."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    procs = Processes(tmp_path)
    try:
        with prefect_server(procs, tmp_path / "prefect-home") as (url, env):
            base = {**_worker_env(env, tmp_path), "OMP_NUM_THREADS": "1"}
            with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
                _start_worker(procs, "control", "control", 2, base)
                for name in ("gpu-a", "gpu-b"):  # separate slot folders: two hosts with one GPU each
                    _start_worker(procs, name, "gpu", 1, {**base, "NEARID_SLOT_DIR": str(tmp_path / f"slots-{name}")})
                _wait_for(
                    lambda: (
                        _online_workers(client, "gpu") == ["gpu-a", "gpu-b"] and _online_workers(client, "control")
                    ),
                    90,
                    "three online workers",
                    procs.diagnostics,
                )
                cmd = [PREFECT, "--no-prompt", "deploy"] + [arg for name in deployments for arg in ("--name", name)]
                done = subprocess.run(
                    cmd, cwd=REPO, env=base, capture_output=True, text=True, timeout=180, check=False
                )
                assert done.returncode == 0, done.stdout + done.stderr
                yield client, procs, base
    finally:
        procs.stop_all()


def _group_runs(client: object) -> list[object]:
    """Flow runs of the ``regenerate/shards`` deployment."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter

    shards_filter = DeploymentFilter(name=DeploymentFilterName(any_=["shards"]))
    return client.read_flow_runs(deployment_filter=shards_filter, flow_run_filter=FlowRunFilter())


def _ran_on(tmp_path: Path, run: object) -> list[str]:
    """The GPU workers that started ``run`` (both may try; the one the server refuses logs an aborted submission)."""
    ran = []
    for name in ("gpu-a", "gpu-b"):
        log = (tmp_path / f"{name}.log").read_text()
        if f"submitting flow run '{run.id}'" in log and f"Aborted submission of flow run '{run.id}'" not in log:
            ran.append(name)
    return ran


def test_two_gpu_workers_share_a_rebuild(tmp_path: Path, tiny_models_dir: Path) -> None:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    root = str(tmp_path / "data")
    with fleet(tmp_path, ["rebuild-dataset", "shards"]) as (client, procs, _):
        rebuild = client.read_deployment_by_name("rebuild-dataset/rebuild-dataset")
        assert rebuild.work_pool_name == "control" and rebuild.parameters["fan_out"] == "regenerate/shards"
        parameters = {
            "root": root,
            "configurations": [CONFIG],
            "source": "procedural",
            "input_dir": None,
            "identities": 8,
            "image_size": 64,
            "shard_size": 2,
            "model_dir": str(tiny_models_dir),
            "overrides": FAST,
            "retries": 0,
            "shard_timeout_s": 300,
        }
        run = client.create_flow_run_from_deployment(rebuild.id, parameters=parameters)
        state = _await_final(client, run.id, 300, procs)
        assert state.is_completed(), f"{state}\n{procs.diagnostics()}"

        children = _group_runs(client)
        assert sorted(c.name for c in children) == [f"{CONFIG}/00000-00001", f"{CONFIG}/00002-00003"]
        assert all(c.state.is_completed() for c in children)
        first, second = sorted(children, key=lambda c: c.created)
        # submitted together (when each worker polls is Prefect's: a worker stalled 32 s once on a loaded machine)
        assert (second.created - first.created).total_seconds() < 10
        for child in children:
            runs = [child.id, *_child_runs_of(client, child.id)]  # its shard tasks run in a subflow
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=runs)))
            loads = [log.message for log in logs if f"{CONFIG} loaded on" in log.message]
            assert len(loads) == 1, [log.message for log in logs]  # one model load for the group's 2 shards
        assert sorted(w for child in children for w in _ran_on(tmp_path, child)) == ["gpu-a", "gpu-b"]

    manifest = load_manifest(root)
    assert [e.path for e in manifest.table(f"distractors/{CONFIG}")] == [
        f"distractors/{CONFIG}/shard-0000{k}.parquet" for k in range(4)
    ]
    assert manifest.version is not None
    assert validate(root, progress=False) == []


def _generating_child(worker: int) -> tuple[int, list[int]] | None:
    """(pid, shard indices) of the ``nearid generate`` child below the worker process, if one runs."""
    for pid in _descendants(worker):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"generate" in argv and b"--shards" in argv:
            return pid, [int(k) for k in argv[argv.index(b"--shards") + 1].split(b",")]
    return None


def test_a_group_whose_worker_dies_is_resubmitted_to_another(tmp_path: Path, tiny_models_dir: Path) -> None:
    from prefect.states import Crashed

    from nearid.common.procedural import ProceduralConfig
    from nearid.curation.procedural import curate_procedural

    root = str(tmp_path / "data")
    curate_procedural(root, ProceduralConfig(identities=8, image_size=64, seed=5), shard_size=2, progress=False)
    table = f"distractors/{CONFIG}"
    with fleet(tmp_path, ["regenerate", "shards"]) as (client, procs, _):
        regenerate = client.read_deployment_by_name("regenerate/regenerate")
        parameters = {"root": root, "configurations": [CONFIG], "model_dir": str(tiny_models_dir)}
        parameters |= {"overrides": FAST, "retries": 0, "shard_timeout_s": 300}
        run = client.create_flow_run_from_deployment(regenerate.id, parameters=parameters)

        worker_a = procs.running["gpu-a"].pid
        child = _wait_for(lambda: _generating_child(worker_a), 180, "gpu-a's generate child", procs.diagnostics)
        first = f"{table}/shard-{child[1][0]:05d}.parquet"
        entries = lambda: {e.path: e for e in load_manifest(root).table(table)}  # noqa: E731
        _wait_for(lambda: first in entries(), 120, "gpu-a's first shard", procs.diagnostics)
        _kill_tree(worker_a)  # the machine is gone, mid-group
        procs.running["gpu-a"].wait(timeout=30)
        kept = entries()[first]
        (lost,) = [r for r in _group_runs(client) if _ran_on(tmp_path, r) == ["gpu-a"]]
        assert not client.read_flow_run(lost.id).state.is_final()
        # what the crashed-runs automation does once the run's heartbeats stop (tested in test_crash_and_cancel.py)
        client.set_flow_run_state(lost.id, Crashed(message="no heartbeat"), force=True)

        state = _await_final(client, run.id, 240, procs)
        assert state.is_completed(), f"{state}\n{procs.diagnostics()}"
        runs = _group_runs(client)
        again = [r for r in runs if r.name == lost.name and r.id != lost.id]
        assert len(runs) == 3 and len(again) == 1  # the lost group was submitted once more
        assert again[0].state.is_completed() and _ran_on(tmp_path, again[0]) == ["gpu-b"]

    after = entries()
    assert sorted(after) == [f"{table}/shard-0000{k}.parquet" for k in range(4)]  # none lost
    assert after[first].generation == kept.generation and after[first].sha256 == kept.sha256  # none made twice
    assert list(Path(root).rglob("*.tmp")) == []
    assert validate(root, progress=False) == []


def test_cancelling_the_run_cancels_its_groups(tmp_path: Path, tiny_models_dir: Path) -> None:
    from nearid.common.procedural import ProceduralConfig
    from nearid.curation.procedural import curate_procedural

    root = str(tmp_path / "data")
    curate_procedural(root, ProceduralConfig(identities=8, image_size=64, seed=5), shard_size=2, progress=False)
    with fleet(tmp_path, ["regenerate", "shards"]) as (client, procs, env):
        regenerate = client.read_deployment_by_name("regenerate/regenerate")
        parameters = {"root": root, "configurations": [CONFIG], "model_dir": str(tiny_models_dir)}
        parameters |= {"overrides": {**FAST, "steps": 400}, "retries": 0, "shard_timeout_s": 300}  # minutes per group
        run = client.create_flow_run_from_deployment(regenerate.id, parameters=parameters)
        workers = [procs.running[name].pid for name in ("gpu-a", "gpu-b")]
        _wait_for(lambda: all(_generating_child(w) for w in workers), 180, "both workers' children", procs.diagnostics)
        start = time.monotonic()
        done = subprocess.run(
            [PREFECT, "flow-run", "cancel", str(run.id)], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        state = _await_final(client, run.id, 90, procs)
        groups = _wait_for(
            lambda: (runs := _group_runs(client)) and all(r.state.is_final() for r in runs) and runs,
            90,
            "the group runs to end",
            procs.diagnostics,
        )
        seconds = time.monotonic() - start
        assert state.is_cancelled(), state
        assert [r.state.type.value for r in groups] == ["CANCELLED", "CANCELLED"], [r.state for r in groups]
        _wait_for(lambda: not any(_generating_child(w) for w in workers), 30, "the children to end", procs.diagnostics)
        assert all(procs.running[name].poll() is None for name in ("gpu-a", "gpu-b"))  # the workers live on
        print(f"\nrun and both groups cancelled, children gone, {seconds:.1f}s after the cancel")
    # shards committed before the cancel stay (complete and valid); nothing half-made is published or left behind
    assert [p for p in validate(root, progress=False, allow_partial=True) if p.severity == "error"] == []
    assert list(Path(root).rglob("*.tmp")) == []
