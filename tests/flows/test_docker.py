"""docker/: the compose file refuses to start without its secrets, pins one GPU per worker, and the
worker image is a non-root CUDA image running a `gpu` pool worker."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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
    assert len(set(devices)) == len(devices)  # no GPU is given to two workers


def test_worker_image_is_cuda_non_root_and_starts_a_gpu_pool_worker() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:[\w.-]+-runtime-", text, re.M)
    assert re.search(r'pip install --index-url "\$TORCH_INDEX_URL"', text)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert '["prefect", "worker", "start", "--pool", "gpu", "--type", "process"]' in text
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("**") + 1 :][:1] == ["!pyproject.toml"]  # the context is the project, not .venv


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
