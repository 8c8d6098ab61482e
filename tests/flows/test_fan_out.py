"""A rebuild spread over a fleet, on a real Prefect server: the `control` pool runs the rebuild, two `gpu` workers
(each with its own slot folder, as on two hosts) share its shard groups through the `regenerate/shards`
deployment, each loading the model once, both busy at the same time; the dataset validates and gets a version.
"""

from __future__ import annotations

import subprocess
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


def test_two_gpu_workers_share_a_rebuild(tmp_path: Path, tiny_models_dir: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = str(tmp_path / "data")
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
                cmd = [PREFECT, "--no-prompt", "deploy", "--name", "rebuild-dataset", "--name", "shards"]
                done = subprocess.run(
                    cmd, cwd=REPO, env=base, capture_output=True, text=True, timeout=180, check=False
                )
                assert done.returncode == 0, done.stdout + done.stderr
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

                shards_filter = DeploymentFilter(name=DeploymentFilterName(any_=["shards"]))
                children = client.read_flow_runs(deployment_filter=shards_filter, flow_run_filter=FlowRunFilter())
                assert sorted(c.name for c in children) == [f"{CONFIG}/00000-00001", f"{CONFIG}/00002-00003"]
                assert all(c.state.is_completed() for c in children)
                first, second = sorted(children, key=lambda c: c.start_time)
                assert second.start_time < first.end_time  # both workers busy at the same time

                ran_on = {}
                for child in children:
                    runs = [child.id, *_child_runs_of(client, child.id)]  # its shard tasks run in a subflow
                    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=runs)))
                    loads = [log.message for log in logs if f"{CONFIG} loaded on" in log.message]
                    assert len(loads) == 1, [log.message for log in logs]  # one model load for the group's 2 shards
                    ran_on[child.name] = [
                        name for name in ("gpu-a", "gpu-b") if str(child.id) in (tmp_path / f"{name}.log").read_text()
                    ]
                assert sorted(w for names in ran_on.values() for w in names) == ["gpu-a", "gpu-b"], ran_on
    finally:
        procs.stop_all()

    manifest = load_manifest(root)
    assert [e.path for e in manifest.table(f"distractors/{CONFIG}")] == [
        f"distractors/{CONFIG}/shard-0000{k}.parquet" for k in range(4)
    ]
    assert manifest.version is not None
    assert validate(root, progress=False) == []
