"""Shard generation on a real local Ray head (``ray start --head`` on loopback, two fake GPUs, CPU tensors).

Two actors share four shards of tiny FLUX Fill, each loading the model once; a cluster without the GPUs asked for
fails within its deadline with a message naming what is missing; an address where no cluster answers fails fast.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.shards import ShardRunOptions, plan_shards
from storage import load_manifest
from storage.validate import validate


RAY = str(Path(sys.executable).with_name("ray"))
CONFIG = "flux-fill-512"
FAST = {"steps": 2, "resolution": 64}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray head on 127.0.0.1 declaring 2 GPUs (its actors see CUDA_VISIBLE_DEVICES but compute on the CPU)."""
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "NEARID_PROGRESS": "off"}
    cmd = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2"]
    cmd += ["--num-gpus", "2", "--include-dashboard", "false", "--disable-usage-stats"]
    cmd += ["--object-store-memory", "100000000", "--temp-dir", str(temp)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120, check=False)


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    """8 procedural identities in 4 shards of 2."""
    from nearid.common.procedural import ProceduralConfig
    from nearid.curation.procedural import curate_procedural

    root = str(tmp_path / "data")
    curate_procedural(root, ProceduralConfig(identities=8, image_size=64, seed=5), shard_size=2, progress=False)
    return root


def test_two_actors_share_the_shards_each_loading_the_model_once(
    prefect_api, ray_head: str, dataset: str, tiny_models_dir: Path
) -> None:
    from flows.regenerate import regenerate_flow

    jobs = plan_shards(dataset, [CONFIG], overrides=FAST)
    summary = regenerate_flow(
        dataset, [CONFIG], model_dir=str(tiny_models_dir), overrides=FAST, ray_address=ray_head, shard_timeout_s=300
    )
    records = summary["shards"]
    assert summary["validation"] == {"errors": 0, "warnings": 0}
    assert sorted(r["path"] for r in records) == sorted(job.path for job in jobs) and len(jobs) == 4
    assert all(r["status"] == "written" for r in records)
    workers = {r["worker"] for r in records}
    assert len(workers) == 2  # both actors made shards
    for worker in workers:  # the model stayed resident: one load per actor, however many shards it made
        assert sum(r["model_loads"] for r in records if r["worker"] == worker) == 1
    spans = {
        w: (
            min(r["started"] for r in records if r["worker"] == w),
            max(r["ended"] for r in records if r["worker"] == w),
        )
        for w in workers
    }
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end  # busy at the same time
    assert validate(dataset, progress=False) == []
    assert sum(e.rows for e in load_manifest(dataset).table(f"distractors/{CONFIG}")) == 8


def test_missing_gpus_fail_clearly_within_the_deadline(
    ray_head: str, dataset: str, tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.ray_engine import RayResourcesError, generate_on_ray

    jobs = plan_shards(dataset, [CONFIG], overrides=FAST)
    options = ShardRunOptions(dataset, model_dir=str(tiny_models_dir), overrides=FAST)
    monkeypatch.setenv("NEARID_RAY_GPUS_PER_ACTOR", "4")  # more than the cluster has
    start = time.monotonic()
    with pytest.raises(RayResourcesError, match="has 2 GPUs and each generator actor needs 4"):
        generate_on_ray(ray_head, jobs, options)
    assert time.monotonic() - start < 30

    # the GPUs exist but another job holds them: the actors wait at most NEARID_RAY_START_TIMEOUT_S
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_GPUS.format(address=ray_head)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert holder.stdout is not None
        deadline = time.monotonic() + 120
        while (line := holder.stdout.readline()) and "holding" not in line:
            assert time.monotonic() < deadline, "the GPU holder did not start"
        monkeypatch.setenv("NEARID_RAY_GPUS_PER_ACTOR", "1")
        monkeypatch.setenv("NEARID_RAY_START_TIMEOUT_S", "8")
        start = time.monotonic()
        with pytest.raises(RayResourcesError, match="found no free 1 GPU within 8s"):
            generate_on_ray(ray_head, jobs, options)
        assert time.monotonic() - start < 45
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert load_manifest(dataset).table(f"distractors/{CONFIG}") == []  # nothing written


HOLD_GPUS = """
import time, ray
ray.init(address="{address}", log_to_driver=False)
@ray.remote(num_gpus=2)
class Holder:
    def ok(self):
        return 1
holder = Holder.remote()
ray.get(holder.ok.remote())
print("holding", flush=True)
time.sleep(600)
"""


def test_an_address_where_nothing_listens_fails_fast(dataset: str) -> None:
    from flows.ray_engine import RayUnavailable, generate_on_ray

    start = time.monotonic()
    with pytest.raises(RayUnavailable, match=r"no Ray cluster answers at 127\.0\.0\.1:\d+"):
        generate_on_ray(f"127.0.0.1:{_free_port()}", plan_shards(dataset, ["null"]), ShardRunOptions(dataset))
    assert time.monotonic() - start < 15  # Ray's own client waits minutes


def _actor_pids(title: bytes) -> list[int]:
    """Processes whose title starts with ``title`` (Ray titles an actor ``ray::ShardActor``, and
    ``ray::ShardActor.generate`` while it makes a shard)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/cmdline").read_bytes().startswith(title):
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def _generating_actor() -> int | None:
    """The pid of a Ray actor process busy making a shard."""
    busy = _actor_pids(b"ray::ShardActor.generate")
    return busy[0] if busy else None


def test_an_actor_killed_mid_shard_is_restarted_and_its_shard_made(
    ray_head: str, dataset: str, tiny_models_dir: Path
) -> None:
    import threading

    from flows.ray_engine import generate_on_ray

    jobs = plan_shards(dataset, [CONFIG], overrides=FAST)
    options = ShardRunOptions(dataset, model_dir=str(tiny_models_dir), overrides=FAST, timeout_s=300)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["records"] = generate_on_ray(ray_head, jobs, options)
        except Exception as exc:  # reported below
            outcome["error"] = exc

    driver = threading.Thread(target=run, daemon=True)
    driver.start()
    deadline = time.monotonic() + 120
    while (victim := _generating_actor()) is None:
        assert driver.is_alive() and time.monotonic() < deadline, f"no actor started a shard: {outcome}"
        time.sleep(0.05)
    os.kill(victim, 9)  # what an OOM kill or a lost GPU does to an actor
    driver.join(timeout=240)
    assert not driver.is_alive() and "error" not in outcome, outcome
    records = outcome["records"]
    assert sorted(r["path"] for r in records) == sorted(job.path for job in jobs)
    assert all(not r["worker"].endswith(f":{victim}") for r in records)  # the killed actor finished nothing
    assert validate(dataset, progress=False) == []
    assert sum(e.rows for e in load_manifest(dataset).table(f"distractors/{CONFIG}")) == 8


def test_cancelling_the_run_stops_its_actors(prefect_api, ray_head: str, dataset: str, tiny_models_dir: Path) -> None:
    import threading

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.states import Cancelling

    from flows.regenerate import regenerate_flow

    outcome: dict[str, object] = {}
    name = f"ray-cancel-{os.getpid()}-{time.monotonic_ns()}"
    slow = {**FAST, "steps": 4000}  # minutes of work per shard

    def run() -> None:
        flow = regenerate_flow.with_options(flow_run_name=name)
        outcome["state"] = flow(
            dataset, [CONFIG], model_dir=str(tiny_models_dir), overrides=slow, ray_address=ray_head, return_state=True
        )

    driver = threading.Thread(target=run, daemon=True)
    driver.start()
    deadline = time.monotonic() + 120
    while _generating_actor() is None:
        assert driver.is_alive() and time.monotonic() < deadline, f"no actor started a shard: {outcome}"
        time.sleep(0.1)
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
        start = time.monotonic()
        client.set_flow_run_state(flow_run.id, Cancelling(message="cancelled by the test"), force=True)
    driver.join(timeout=60)
    seconds = time.monotonic() - start
    assert not driver.is_alive(), "the run did not stop within 60 s of its cancel"
    assert outcome["state"].type.value in ("CANCELLING", "CANCELLED"), outcome["state"]  # stopped, not failed
    deadline = time.monotonic() + 30
    while _actor_pids(b"ray::ShardActor"):  # killed with their shards, not left computing
        assert time.monotonic() < deadline, "generator actors outlived the cancelled run"
        time.sleep(0.2)
    assert seconds < 15, seconds
    print(f"\nthe run stopped {seconds:.1f}s after its cancel; its actors are gone")
