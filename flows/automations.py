"""The server-side automations the fleet relies on, installed idempotently from ``docker/automations/*.yaml``.

Each file holds one automation in the format ``prefect automation create --from-file`` reads. Prefect's CLI makes
a new copy on every call; :func:`ensure_automations` keeps exactly one automation per name instead (created,
updated in place, or left alone), so running it after every deploy is safe::

    python -m flows.automations                   # against PREFECT_API_URL
    python -m flows.automations --within-s 120    # a longer heartbeat grace than the file's
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml


logger = logging.getLogger(__name__)

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "docker" / "automations"
MIN_HEARTBEAT_S = 30
"""Prefect's smallest flow-run heartbeat interval (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` >= 30)."""


@dataclass(frozen=True)
class Installed:
    """What :func:`ensure_automations` did with one automation."""

    name: str
    action: str  # created | updated | unchanged
    id: str


def automation_files(folder: Path = DEFAULT_DIR) -> list[Path]:
    """The automation files of ``folder`` (``*.yaml``), sorted; an error if there are none."""
    files = sorted(Path(folder).glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no automation files (*.yaml) in {folder}")
    return files


def load_automation(path: Path, within_s: float | None = None) -> Any:
    """One automation file as Prefect's ``AutomationCore``; ``within_s`` replaces a proactive trigger's window."""
    from prefect.events.schemas.automations import AutomationCore
    from pydantic import ValidationError

    try:
        data = yaml.safe_load(Path(path).read_text())
        automation = AutomationCore.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(f"{path}: not a Prefect automation ({' '.join(first[:3])})") from None
    if within_s is not None and getattr(automation.trigger, "posture", None) == "Proactive":
        if within_s <= MIN_HEARTBEAT_S:
            raise ValueError(
                f"within_s must exceed the {MIN_HEARTBEAT_S} s minimum heartbeat interval, got {within_s}"
            )
        trigger = automation.trigger.model_copy(update={"within": timedelta(seconds=within_s)})
        automation = automation.model_copy(update={"trigger": trigger})
    return automation


def _core(automation: Any) -> dict[str, Any]:
    from prefect.events.schemas.automations import AutomationCore

    return automation.model_dump(mode="json", include=set(AutomationCore.model_fields))


def ensure_automations(client: Any, folder: Path = DEFAULT_DIR, within_s: float | None = None) -> list[Installed]:
    """Make the server hold exactly one automation per file of ``folder``, by name, equal to the file.

    ``client`` is a sync Prefect client (``get_client(sync_client=True)``). Extra copies of a name (left by
    ``prefect automation create``) are deleted.
    """
    done = []
    for path in automation_files(folder):
        wanted = load_automation(path, within_s)
        existing = client.read_automations_by_name(wanted.name)
        if not existing:
            automation_id = client.create_automation(wanted)
            done.append(Installed(wanted.name, "created", str(automation_id)))
            continue
        keep, *extra = sorted(existing, key=lambda a: str(a.id))
        for duplicate in extra:
            client.delete_automation(duplicate.id)
            logger.info("deleted a duplicate of automation %s (%s)", wanted.name, duplicate.id)
        if _core(keep) == _core(wanted) and not extra:
            done.append(Installed(wanted.name, "unchanged", str(keep.id)))
        else:
            client.update_automation(keep.id, wanted)
            done.append(Installed(wanted.name, "updated", str(keep.id)))
    return done


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: install the automations against ``PREFECT_API_URL``; one line per automation."""
    parser = argparse.ArgumentParser(prog="python -m flows.automations", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="folder of automation files (*.yaml)")
    parser.add_argument("--within-s", type=float, default=None, help="replace the heartbeat grace of the files")
    args = parser.parse_args(argv)
    import httpx
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    try:
        for path in automation_files(args.dir):  # every file is checked before anything is sent
            load_automation(path, args.within_s)
        if not PREFECT_API_URL.value():  # else Prefect would start a throwaway local server
            raise ValueError("PREFECT_API_URL is not set: point it at the Prefect server, e.g. http://host:4200/api")
        with get_client(sync_client=True) as client:
            for item in ensure_automations(client, args.dir, args.within_s):
                print(f"{item.action} automation {item.name} ({item.id})")
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:  # no server, refused credentials
        print(f"error: the Prefect API did not accept the automations: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
