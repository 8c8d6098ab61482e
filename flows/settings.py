"""Where flows run: the embedded default (a private Prefect home per run folder) or a user's server, the
thread pool that runs a flow's tasks, and the address of an existing Ray cluster (:mod:`flows.ray_engine`).

:func:`use_embedded_default` only edits environment variables and never imports Prefect, so the CLI
calls it first and Prefect reads the result when it is imported.
"""

from __future__ import annotations

import logging
import os
import sys
import tomllib
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 90
"""Seconds the embedded server may take to start: a first start runs the database migrations, which
took 12-15 s on our 2-core machine and about 75 s in a cold container (Prefect's default is 20 s)."""

EMBEDDED_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(STARTUP_TIMEOUT_S),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # offline machines only log telemetry failures
}


class MissingExtraError(ImportError):
    """An optional integration was asked for but its package is not installed."""


def _profiles_path(env: MutableMapping[str, str]) -> Path:
    if env.get("PREFECT_PROFILES_PATH"):
        return Path(env["PREFECT_PROFILES_PATH"]).expanduser()
    home = Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()
    return home / "profiles.toml"


def configured_api_url(environ: MutableMapping[str, str] | None = None) -> str | None:
    """The API URL the user chose: ``PREFECT_API_URL``, else the one in the active Prefect profile.

    A profile is where ``prefect config set PREFECT_API_URL=...`` stores it; it lives under the user's
    Prefect home, which the embedded default would otherwise hide.
    """
    env = os.environ if environ is None else environ
    if env.get("PREFECT_API_URL"):
        return env["PREFECT_API_URL"]
    path = _profiles_path(env)
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = env.get("PREFECT_PROFILE") or profiles.get("active")
    profile = profiles.get("profiles", {}).get(active, {}) if active else {}
    url = profile.get("PREFECT_API_URL") if isinstance(profile, dict) else None
    return str(url) if url else None


def use_embedded_default(
    run_dir: str | os.PathLike[str], environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Point Prefect at a private home inside ``run_dir`` unless the user already points at a server.

    Sets ``PREFECT_HOME`` to the absolute ``<run_dir>/.prefect`` (its SQLite database, results and
    logs stay with the run instead of mixing every project in ``~/.prefect``), a start-up timeout
    that survives slow machines and analytics off. Values the user set are kept. Returns what was set.
    Call it before ``prefect`` is imported: Prefect reads its settings at import.
    """
    env = os.environ if environ is None else environ
    url = configured_api_url(env)
    if url:
        logger.info("Prefect API at %s (set by the user): no embedded server", url)
        return {}
    wanted = {"PREFECT_HOME": str((Path(run_dir) / ".prefect").absolute()), **EMBEDDED_DEFAULTS}
    changed = {key: value for key, value in wanted.items() if not env.get(key)}
    env.update(changed)
    if "PREFECT_HOME" in changed:
        Path(changed["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    if changed and environ is None and "prefect" in sys.modules:
        logger.warning("prefect was imported before use_embedded_default(); %s may be ignored", sorted(changed))
    return changed


def is_ray_address(address: str | None) -> bool:
    """``auto``, ``ray://HOST:PORT`` or ``HOST:PORT`` (a cluster's GCS address)."""
    if not address:
        return False
    if address == "auto" or address.startswith("ray://"):
        return True
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and "/" not in host


def runner_address(address: str | None = None) -> str | None:
    """The Ray cluster in effect: ``address``, else ``NEARID_RAY_ADDRESS``, else None (no Ray); ``local`` means
    none. An address that is none of the forms Ray takes is an error."""
    address = address or os.environ.get("NEARID_RAY_ADDRESS") or None
    if address is None or address == "local":
        return None
    if not is_ray_address(address):
        raise ValueError(f"unknown Ray address {address!r}: use ray://HOST:PORT, HOST:PORT, auto or leave it empty")
    return address


def make_task_runner(max_workers: int | None = None) -> Any:
    """A thread pool of ``max_workers`` threads for a flow's tasks (bounded: Prefect's default pool is not)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=max_workers)
