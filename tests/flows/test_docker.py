"""docker/: the compose file refuses to start without its secrets, pins one GPU per worker, and the
worker image is a non-root Python image with CUDA torch running a `gpu` pool worker with a healthcheck, on the
Python the tests run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml


DOCKER = Path(__file__).resolve().parents[2] / "docker"
REQUIRED = ("POSTGRES_PASSWORD", "PREFECT_AUTH", "NEARID_DATA_DIR", "NEARID_MODELS_DIR")
ENV = {
    "POSTGRES_PASSWORD": "5f0e2b1c9d",
    "PREFECT_AUTH": "admin:7c4a8d09ca",
    "NEARID_DATA_DIR": "/srv/nearid-data",
    "NEARID_MODELS_DIR": "/srv/nearid-models",
}
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:[?-])(?P<arg>[^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable syntax as used in compose.yaml: ${VAR}, ${VAR:-default}, ${VAR:?message}."""

    def value(match: re.Match) -> str:
        name, op, arg = match.group("name", "op", "arg")
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        return arg if op == ":-" else ""

    return VARIABLE.sub(value, text)


def test_secrets_have_no_defaults_and_are_required() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    uses = VARIABLE.findall(text)
    for name, op, _ in uses:
        if name in REQUIRED:
            assert op == ":?", f"${{{name}}} must use :? so compose refuses to start without it"
    assert {name for name, _, _ in uses} >= set(REQUIRED)
    for name in REQUIRED:
        missing = {k: v for k, v in ENV.items() if k != name}
        with pytest.raises(ValueError, match=f"required variable {name} is missing"):
            interpolate(text, missing)
    assert "prefect:prefect@" not in text and "PASSWORD: prefect" not in text


def test_compose_wires_auth_database_and_one_gpu_per_worker() -> None:
    config = yaml.safe_load(interpolate((DOCKER / "compose.yaml").read_text(), ENV))
    services = config["services"]
    server = services["prefect-server"]["environment"]
    assert server["PREFECT_SERVER_API_AUTH_STRING"] == ENV["PREFECT_AUTH"]
    assert server["PREFECT_API_DATABASE_CONNECTION_URL"] == (
        f"postgresql+asyncpg://prefect:{ENV['POSTGRES_PASSWORD']}@postgres:5432/prefect"
    )
    assert services["prefect-server"]["image"] == "prefecthq/prefect:3.9.1-python3.11"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == ENV["POSTGRES_PASSWORD"]
    workers = {name: s for name, s in services.items() if name.startswith("gpu-worker-")}
    assert len(workers) >= 2
    devices = []
    for name, worker in workers.items():
        assert worker["environment"]["PREFECT_API_AUTH_STRING"] == ENV["PREFECT_AUTH"]
        assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert worker["build"]["dockerfile"] == "docker/Dockerfile"
        assert f"{ENV['NEARID_DATA_DIR']}:/data" in worker["volumes"]
        (reservation,) = worker["deploy"]["resources"]["reservations"]["devices"]
        assert reservation["driver"] == "nvidia" and reservation["capabilities"] == ["gpu"]
        assert len(reservation["device_ids"]) == 1
        devices += reservation["device_ids"]
        assert worker["command"][worker["command"].index("--name") + 1] == name
        queues = [worker["command"][i + 1] for i, arg in enumerate(worker["command"]) if arg == "--work-queue"]
        assert queues == ["default", "training"]  # shard groups and single-GPU training, never control work
        assert worker["environment"]["NEARID_REQUIRE_GPU"] == "1"
    assert len(set(devices)) == len(devices)  # no GPU is given to two workers
    control = services["control-worker"]  # the orchestrating flows: no GPU, its own pool
    assert control["entrypoint"][:7] == ["prefect", "worker", "start", "--pool", "control", "--type", "process"]
    assert "deploy" not in control and control["environment"]["NEARID_REQUIRE_GPU"] == "0"
    assert control["environment"]["PREFECT_API_AUTH_STRING"] == ENV["PREFECT_AUTH"]
    pools = {
        d["name"]: d["work_pool"]["name"]
        for d in yaml.safe_load((DOCKER.parent / "prefect.yaml").read_text())["deployments"]
    }
    assert set(pools.values()) == {"control", "gpu"}  # every deployment has workers here


def test_worker_image_is_cuda_non_root_and_starts_a_gpu_pool_worker() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", text, re.M)
    assert re.search(r'pip install --index-url "\$TORCH_INDEX_URL"', text)  # torch's CUDA wheel and libraries
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+$", text, re.M)
    assert re.search(r"^\s+NVIDIA_DRIVER_CAPABILITIES=compute,utility \\$", text, re.M)  # CUDA and nvidia-smi
    assert re.search(r"pip install -c requirements\.lock \. ", text)  # the versions the tests ran with
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    assert entrypoint[:7] == ["prefect", "worker", "start", "--pool", "gpu", "--type", "process"]
    assert "--with-healthcheck" in entrypoint
    assert re.search(r"^\s+PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30 \\$", text, re.M)
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("**") + 1 :][:1] == ["!pyproject.toml"]  # the context is the project, not .venv
    assert "!requirements.lock" in ignore and "!docker/automations/**" in ignore


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_one_python_and_one_prefect_everywhere() -> None:
    """The worker image, the Prefect server image and the tests run the same Python minor and Prefect version."""
    text = (DOCKER / "Dockerfile").read_text()
    image = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)[\w.-]*$", text, re.M)
    assert image, "the worker image must start from an official python:X.Y image"
    assert _minor(image.group(1)) == sys.version_info[:2]
    compose = yaml.safe_load(interpolate((DOCKER / "compose.yaml").read_text(), ENV))
    server = re.fullmatch(
        r"prefecthq/prefect:([\d.]+)-python(\d+\.\d+)", compose["services"]["prefect-server"]["image"]
    )
    assert server and _minor(server.group(2)) == sys.version_info[:2]
    prefect = re.search(r"^ARG PREFECT_VERSION=([\d.]+)$", text, re.M).group(1)
    locked = re.search(r"^prefect==([\d.]+)$", (DOCKER.parent / "requirements.lock").read_text(), re.M).group(1)
    assert server.group(1) == prefect == locked == version("prefect")


def test_workers_have_heartbeats_a_healthcheck_and_the_automation_is_installed() -> None:
    compose = yaml.safe_load(interpolate((DOCKER / "compose.yaml").read_text(), ENV))
    services = compose["services"]
    for name, service in services.items():
        if name.startswith("gpu-worker-") or name == "control-worker":
            assert service["environment"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
            test = service["healthcheck"]["test"]
            assert test[0] == "CMD" and "/health" in " ".join(test)
    installer = services["automations"]
    assert installer["entrypoint"] == ["python", "-m", "flows.automations"]
    assert installer["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert installer["healthcheck"] == {"disable": True} and "deploy" not in installer  # no GPU, no worker


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_available(), reason="needs the docker CLI with its compose plugin")
def test_docker_compose_config_accepts_the_file() -> None:
    env = {**os.environ, **ENV}
    done = subprocess.run(
        ["docker", "compose", "-f", str(DOCKER / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "gpu-worker-0" in done.stdout and "prefect-server" in done.stdout
    missing = {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}
    refused = subprocess.run(
        ["docker", "compose", "-f", str(DOCKER / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env=missing,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr
