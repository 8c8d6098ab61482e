from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.settings import (
    STARTUP_TIMEOUT_S,
    MissingExtraError,
    configured_api_url,
    make_task_runner,
    runner_address,
    use_embedded_default,
)


def test_embedded_default_gives_the_run_its_own_prefect_home(tmp_path: Path) -> None:
    env = {"PREFECT_PROFILES_PATH": str(tmp_path / "none.toml")}
    changed = use_embedded_default(tmp_path / "run", env)
    home = tmp_path / "run" / ".prefect"
    assert changed == {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(STARTUP_TIMEOUT_S),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    assert env["PREFECT_HOME"] == str(home) and Path(env["PREFECT_HOME"]).is_absolute() and home.is_dir()


def test_relative_run_folders_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"PREFECT_PROFILES_PATH": str(tmp_path / "none.toml")}
    use_embedded_default("runs/x", env)
    assert env["PREFECT_HOME"] == str(tmp_path / "runs" / "x" / ".prefect")


def test_values_the_user_set_are_kept(tmp_path: Path) -> None:
    env = {"PREFECT_PROFILES_PATH": str(tmp_path / "none.toml"), "PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    changed = use_embedded_default(tmp_path, env)
    assert "PREFECT_SERVER_ANALYTICS_ENABLED" not in changed and env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"


def test_a_user_server_disables_the_embedded_default(tmp_path: Path) -> None:
    env = {"PREFECT_API_URL": "http://prefect:4200/api"}
    assert use_embedded_default(tmp_path / "run", env) == {} and "PREFECT_HOME" not in env
    assert not (tmp_path / "run").exists()

    profiles = tmp_path / "profiles.toml"  # where `prefect config set PREFECT_API_URL=...` writes it
    profiles.write_text(
        'active = "fleet"\n[profiles.fleet]\nPREFECT_API_URL = "http://fleet:4200/api"\n[profiles.local]\n'
    )
    env = {"PREFECT_PROFILES_PATH": str(profiles)}
    assert configured_api_url(env) == "http://fleet:4200/api"
    assert use_embedded_default(tmp_path / "run", env) == {}
    assert configured_api_url({**env, "PREFECT_PROFILE": "local"}) is None
    assert use_embedded_default(tmp_path / "run", {**env, "PREFECT_PROFILE": "local"})["PREFECT_HOME"]


def test_prefect_reads_the_settings_when_imported_afterwards(tmp_path: Path) -> None:
    code = (
        "import json, os, sys\n"
        "from flows.settings import use_embedded_default\n"
        f"use_embedded_default({str(tmp_path / 'run')!r})\n"
        "assert 'prefect' not in sys.modules\n"
        "from prefect.settings import get_current_settings\n"
        "s = get_current_settings()\n"
        "print(json.dumps([str(s.home), s.server.ephemeral.startup_timeout_seconds, s.server.analytics_enabled]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_PROFILES_PATH"] = str(tmp_path / "none.toml")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [str(tmp_path / "run" / ".prefect"), 90, False]


def test_task_runner_is_a_bounded_thread_pool() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner

    runner = make_task_runner(max_workers=3)
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3


def test_ray_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEARID_RAY_ADDRESS", raising=False)
    assert runner_address(None) is None
    for address in ("auto", "ray://ray-head:10001", "10.0.0.5:6379"):
        assert runner_address(address) == address
    with pytest.raises(ValueError, match="unknown Ray address 'dask://x'"):
        runner_address("dask://x")
    monkeypatch.setenv("NEARID_RAY_ADDRESS", "auto")
    assert runner_address(None) == "auto" and runner_address("ray://h:1") == "ray://h:1"
    monkeypatch.setenv("NEARID_RAY_ADDRESS", "local")
    assert runner_address(None) is None


def test_ray_missing_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.ray_engine import connect

    monkeypatch.setitem(sys.modules, "ray", None)  # absent, even where it is installed
    with pytest.raises(MissingExtraError, match=r'pip install "nearid\[ray\]"'):
        connect("ray://ray-head:10001")
