"""End to end on a real Prefect server: prefect.yaml's ``regenerate`` deployment on a ``process`` work pool.

A ``prefect server start`` on 127.0.0.1 (SQLite in a temporary PREFECT_HOME, a free port), the deployment's
pool and a worker, ``prefect deploy --name regenerate`` from the repository's prefect.yaml (run here without
fan-out, on the worker's own slot), and a small procedural dataset with tiny FLUX Fill weights. Run 1 writes
shards 0-1. Run 2 asks for every shard: one group, shards 2-3, in one child; once shard 2 is committed the whole
worker process tree is SIGKILLed (what losing the machine or its container does). A new worker then runs
run 3, which must finish the dataset with no shard duplicated, lost, partial or redone. Every wait is bounded
and every process is stopped, also on failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage import load_manifest
from storage.fs import resolve, sha256_file
from storage.validate import validate


REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
CONFIG = "flux-fill-512"
TABLE = f"distractors/{CONFIG}"
TIMINGS: dict[str, float] = {}

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate: Callable[[], object], timeout_s: float, what: str, diagnostics: Callable[[], str]) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{diagnostics()}")
        time.sleep(0.2)


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and all its descendants at once: stop them all first so none can spawn or react."""
    tree: set[int] = set()
    while True:
        current = {pid} | _descendants(pid) | tree
        for member in current - tree:
            try:
                os.kill(member, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        if current == tree:
            break
        tree = current
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return sorted(tree)


class Processes:
    """Processes started by the test, each logging to a file; all are killed on exit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.running[name] = proc
        return proc

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.folder / f"{name}.log"
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
        return f"--- {name} ---\n" + "\n".join(text)

    def diagnostics(self) -> str:
        return "\n".join(self.tail(name) for name in self.running)

    def stop_all(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                _kill_tree(proc.pid)
            proc.wait(timeout=30)


@contextmanager
def prefect_server(procs: Processes, home: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real ``prefect server start`` on a free local port, with its own PREFECT_HOME (SQLite)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        HF_HUB_OFFLINE="1",
    )
    start = time.monotonic()
    procs.start("server", [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    _wait_for(healthy, 120, "the Prefect server", procs.diagnostics)
    TIMINGS["server start"] = time.monotonic() - start
    yield url, {**env, "PREFECT_API_URL": url}


def _worker_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        **env,
        "NEARID_PROJECT_DIR": str(REPO),  # prefect.yaml's pull step: run flows from this checkout
        "NEARID_GPU_SLOTS": "0",  # CPU machine: one CPU slot
        "NEARID_SLOT_DIR": str(tmp_path / "slots"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
    }


def _start_worker(procs: Processes, name: str, env: dict[str, str], pool: str = "gpu") -> subprocess.Popen:
    cmd = [PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--limit", "1", "--name", name]
    return procs.start(name, cmd, env)


def _shards(root: str) -> dict[str, object]:
    return {e.path: e for e in load_manifest(root).table(TABLE)}


def _await_final(client: object, run_id: object, timeout_s: float, procs: Processes) -> object:
    """The flow run's final state (bounded wait)."""

    def final() -> object:
        state = client.read_flow_run(run_id).state
        return state if state is not None and state.is_final() else None

    return _wait_for(final, timeout_s, f"flow run {run_id} to finish", procs.diagnostics)


def _child_runs_of(client: object, run_id: object) -> list[object]:
    """Ids of the subflow runs started by flow run ``run_id``."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    parent = FlowRunFilterParentFlowRunId(any_=[run_id])
    return [r.id for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=parent))]


def _task_names(client: object, run_ids: list[object]) -> list[str]:
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    task_filter = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=run_ids))
    return sorted(t.name for t in client.read_task_runs(task_run_filter=task_filter))


def _deploy_regenerate(client: object, env: dict[str, str]) -> object:
    """``prefect deploy --name regenerate`` from the repository's prefect.yaml; returns the deployment."""
    cmd = [PREFECT, "--no-prompt", "deploy", "--name", "regenerate", "--prefect-file", "prefect.yaml"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return client.read_deployment_by_name("regenerate/regenerate")


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    """8 procedural identities in 4 shards of 2."""
    from nearid.common.procedural import ProceduralConfig
    from nearid.curation.procedural import curate_procedural

    root = str(tmp_path / "data")
    curate_procedural(root, ProceduralConfig(identities=8, image_size=64, seed=5), shard_size=2, progress=False)
    return root


def test_regenerate_deployment_survives_a_killed_worker(tmp_path: Path, tiny_models_dir: Path, dataset: str) -> None:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    overall = time.monotonic()
    root = dataset
    identities = load_manifest(root).table("identities")
    assert len(identities) == 4 and sum(e.rows for e in identities) == 8
    parameters = {
        "root": root,
        "configurations": [CONFIG],
        "model_dir": str(tiny_models_dir),
        "overrides": {"steps": 2, "resolution": 64},
        "retries": 0,
        "shard_timeout_s": 300,
        "fan_out": None,
    }
    procs = Processes(tmp_path)
    try:
        with prefect_server(procs, tmp_path / "prefect-home") as (url, env):
            worker_env = _worker_env(env, tmp_path)
            with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
                start = time.monotonic()
                # the regenerate deployment's pool; fan_out=None below: its groups run on this worker's slot
                worker = _start_worker(procs, "worker-1", worker_env, pool="control")
                _wait_for(lambda: _pool_exists(client, "control"), 60, "the worker's pool", procs.diagnostics)
                TIMINGS["worker start"] = time.monotonic() - start

                start = time.monotonic()
                # deployed from a machine whose NEARID_PROJECT_DIR is elsewhere: the worker's value must win
                deployment = _deploy_regenerate(client, {**worker_env, "NEARID_PROJECT_DIR": "/not/on/the/worker"})
                TIMINGS["prefect deploy"] = time.monotonic() - start
                assert deployment.work_pool_name == "control"
                assert deployment.entrypoint == "flows/regenerate.py:regenerate_flow"

                def trigger(shards: str | None) -> object:
                    run_parameters = {**parameters, "shards": shards}
                    return client.create_flow_run_from_deployment(deployment.id, parameters=run_parameters)

                # run 1: shards 0-1 land; the table is valid but unfinished (2 of its 4 planned shards)
                start = time.monotonic()
                state = _await_final(client, trigger("0-1").id, 150, procs)
                assert state.is_completed(), f"{state}\n{procs.diagnostics()}"
                TIMINGS["run 1 (2 shards)"] = time.monotonic() - start
                assert sorted(_shards(root)) == [f"{TABLE}/shard-0000{k}.parquet" for k in (0, 1)]
                assert [(p.code, p.where) for p in validate(root, progress=False) if p.severity == "error"] == [
                    ("incomplete", TABLE)
                ]
                assert [p for p in validate(root, progress=False, allow_partial=True) if p.severity == "error"] == []

                # run 2: every shard; SIGKILL the worker's whole process tree once shard 2 is committed
                start = time.monotonic()
                second = trigger(None)
                shard_2 = f"{TABLE}/shard-00002.parquet"
                _wait_for(lambda: shard_2 in _shards(root), 150, "run 2 to commit shard 2", procs.diagnostics)
                child = _wait_for(lambda: _generator_child(worker.pid, 3), 60, "shard 3's child", procs.diagnostics)
                killed = _kill_tree(worker.pid)
                worker.wait(timeout=30)
                TIMINGS["run 2 until the kill"] = time.monotonic() - start
                assert worker.pid in killed and child in killed  # the worker, its flow run and the generator child
                before = _shards(root)
                assert sorted(before) == [f"{TABLE}/shard-0000{k}.parquet" for k in (0, 1, 2)]  # killed mid-run
                assert not client.read_flow_run(second.id).state.is_final()

                # run 3 on a new worker completes the dataset, running only the missing shard
                start = time.monotonic()
                _start_worker(procs, "worker-2", worker_env, pool="control")
                third = trigger(None)
                state = _await_final(client, third.id, 150, procs)
                assert state.is_completed(), f"{state}\n{procs.diagnostics()}"
                TIMINGS["run 3 (new worker, 1 shard)"] = time.monotonic() - start
                ran = _wait_for(
                    lambda: _task_names(client, _child_runs_of(client, third.id)),
                    30,
                    "run 3's task runs to be recorded",
                    procs.diagnostics,
                )
                assert ran == [f"{CONFIG}/00003"]
    finally:
        procs.stop_all()

    after = _shards(root)
    assert sorted(after) == [f"{TABLE}/shard-0000{k}.parquet" for k in range(4)]  # none lost, none extra
    for path, entry in before.items():
        assert after[path].written_at == entry.written_at and after[path].sha256 == entry.sha256  # none redone
    fs, base = resolve(root)
    for path, entry in load_manifest(root).shards.items():
        assert sha256_file(fs, f"{base}/{path}") == entry.sha256, path
    assert sum(e.rows for e in after.values()) == 8  # every identity exactly once
    assert sorted(p.name for p in Path(root, TABLE).iterdir()) == [f"shard-0000{k}.parquet" for k in range(4)]
    assert list(Path(root).rglob("*.tmp")) == []
    assert validate(root, progress=False) == []  # no error, not even a warning about a partial file
    TIMINGS["total"] = time.monotonic() - overall
    print("\n" + "\n".join(f"{name}: {seconds:.1f}s" for name, seconds in TIMINGS.items()))


def _generator_child(worker: int, shard: int) -> int | None:
    """The pid of the ``nearid generate --shards ...`` process making ``shard`` below the worker, if running."""
    for pid in _descendants(worker):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"generate" in argv
            and b"--shards" in argv
            and str(shard).encode() in argv[argv.index(b"--shards") + 1].split(b",")
        ):
            return pid
    return None


def _pool_exists(client: object, pool: str = "gpu") -> bool:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_work_pool(pool).type == "process"
    except ObjectNotFound:
        return False
