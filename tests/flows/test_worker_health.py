"""The worker healthcheck of docker/Dockerfile and docker/compose.yaml, run for real.

The image's ENTRYPOINT + CMD (``prefect worker start ... --with-healthcheck``) is started against a real Prefect
server on 127.0.0.1, and the HEALTHCHECK command parsed from the Dockerfile (the same as compose's) is run as
Docker would run it: it passes while the worker polls, fails with 503 once the worker cannot reach the server
for 30 query intervals, and fails when the worker is gone.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.flows.test_docker import DOCKER, ENV, interpolate
from tests.flows.test_server_integration import Processes, _free_port, _kill_tree, _wait_for, prefect_server


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

BIN = str(Path(sys.executable).parent)
QUERY_S = 0.5  # the worker is unhealthy after 30 query intervals without a poll: 15 s here
TIMINGS: dict[str, float] = {}


def _dockerfile_instruction(name: str) -> str:
    """The argument of the last ``name`` instruction of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DOCKER / "Dockerfile").read_text())
    found = re.findall(rf"^{name} (.+)$", text, re.M)
    assert found, f"no {name} in docker/Dockerfile"
    return found[-1]


def dockerfile_healthcheck() -> list[str]:
    """The exec-form command of the Dockerfile's HEALTHCHECK."""
    argument = _dockerfile_instruction("HEALTHCHECK")
    return json.loads(argument[argument.index("CMD ") + 4 :])


def compose_healthcheck() -> list[str]:
    """The command of the workers' ``healthcheck.test`` in compose.yaml (``CMD`` form)."""
    services = yaml.safe_load(interpolate((DOCKER / "compose.yaml").read_text(), ENV))["services"]
    tests = {json.dumps(s["healthcheck"]["test"]) for n, s in services.items() if n.startswith("gpu-worker-")}
    assert len(tests) == 1, tests
    test = json.loads(tests.pop())
    assert test[0] == "CMD"
    return test[1:]


def worker_command() -> list[str]:
    """The image's ENTRYPOINT followed by its CMD, with a name for this test."""
    entrypoint = json.loads(_dockerfile_instruction("ENTRYPOINT"))
    cmd = json.loads(_dockerfile_instruction("CMD"))
    return [str(Path(BIN) / entrypoint[0]), *entrypoint[1:], *cmd, "--name", "health-worker"]


def _registered(url: str, name: str) -> bool:
    """Whether the server lists worker ``name`` in the ``gpu`` pool (it has synced at least once)."""
    request = urllib.request.Request(f"{url}/work_pools/gpu/workers/filter", data=b"{}", method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return any(worker["name"] == name for worker in json.load(response))
    except OSError:
        return False


def test_compose_and_dockerfile_run_the_same_check() -> None:
    check = dockerfile_healthcheck()
    assert check == compose_healthcheck()
    assert "/health" in " ".join(check) and "PREFECT_WORKER_WEBSERVER_PORT" in " ".join(check)
    assert "--with-healthcheck" in worker_command()


def test_healthcheck_follows_the_worker(tmp_path: Path) -> None:
    port = _free_port()
    procs = Processes(tmp_path)
    try:
        with prefect_server(procs, tmp_path / "prefect-home") as (url, env):
            env = {
                **env,
                "PATH": f"{BIN}:{env.get('PATH', '')}",  # `python` in the check is this interpreter, as in the image
                "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
                "PREFECT_WORKER_WEBSERVER_PORT": str(port),
                "PREFECT_WORKER_QUERY_SECONDS": str(QUERY_S),
                "PREFECT_WORKER_HEARTBEAT_SECONDS": "1",
            }
            check = dockerfile_healthcheck()

            def run_check() -> subprocess.CompletedProcess:
                return subprocess.run(check, env=env, capture_output=True, text=True, timeout=30, check=False)

            before = run_check()
            assert before.returncode != 0 and "Connection refused" in before.stderr  # no worker yet
            start = time.monotonic()
            worker = procs.start("worker", worker_command(), env)
            _wait_for(lambda: run_check().returncode == 0, 60, "the worker to report healthy", procs.diagnostics)
            TIMINGS["worker start to healthy"] = time.monotonic() - start
            # until its first sync with the server a worker reports healthy without polling; wait for that sync
            _wait_for(lambda: _registered(url, "health-worker"), 60, "the worker's first sync", procs.diagnostics)

            _kill_tree(procs.running["server"].pid)  # the worker can no longer poll for work
            start = time.monotonic()
            _wait_for(lambda: run_check().returncode != 0, 30 * QUERY_S + 30, "the check to fail", procs.diagnostics)
            TIMINGS["server gone to unhealthy"] = time.monotonic() - start
            failed = run_check()
            assert failed.returncode != 0 and "HTTP Error 503" in failed.stderr, failed.stderr
            assert worker.poll() is None  # alive but not polling: exactly what a restart fixes

            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
            gone = run_check()
            assert gone.returncode != 0 and "Connection refused" in gone.stderr
    finally:
        procs.stop_all()
    print("\n" + "\n".join(f"{name}: {seconds:.1f}s" for name, seconds in TIMINGS.items()))
