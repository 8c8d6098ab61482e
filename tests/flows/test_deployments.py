"""prefect.yaml, checked offline: entrypoints import, parameters fit the flows, schedules parse."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def _deployment(spec: dict, name: str) -> dict:
    found = [d for d in spec["deployments"] if d["name"] == name]
    assert len(found) == 1, f"expected one deployment named {name!r}"
    return found[0]


def test_prefect_accepts_the_file(spec: dict) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(spec)
    pools = {d.name: d.work_pool.name for d in model.deployments}
    # orchestrators on the control pool, GPU work (shard groups, training) on the gpu pool
    assert pools == {
        "rebuild-dataset": "control",
        "regenerate": "control",
        "shards": "gpu",
        "retrain-and-benchmark": "gpu",
    }
    for name in ("rebuild-dataset", "regenerate"):  # they fan out to the shards deployment of the same flow
        assert _deployment(spec, name)["parameters"]["fan_out"] == "regenerate/shards"
    assert _deployment(spec, "shards")["entrypoint"] == _deployment(spec, "regenerate")["entrypoint"]
    read, cd = spec["pull"]
    assert read["prefect.deployments.steps.run_shell_script"]["script"] == "echo $NEARID_PROJECT_DIR"
    assert cd["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ project.stdout }}"
    assert "{{ $" not in yaml.safe_dump(spec["pull"])  # nothing is frozen at deploy time


def test_deployments_build_offline_with_their_schedules_and_parameters(spec: dict) -> None:
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron
    from prefect.server.schemas.schedules import CronSchedule

    from generators.registry import PAPER_CONFIGS

    built = {}
    for name in ("rebuild-dataset", "regenerate", "shards"):
        entry = _deployment(spec, name)
        flow = load_flow_from_entrypoint(entry["entrypoint"])
        flow.validate_parameters(entry["parameters"])  # raises on an unknown name or a wrong type
        schedules = [Cron(s["cron"], timezone=s["timezone"]) for s in entry["schedules"]]
        built[name] = flow.to_deployment(
            name=name,
            schedules=schedules,
            parameters=entry["parameters"],
            work_pool_name=entry["work_pool"]["name"],
            tags=entry["tags"],
        )
        if name != "shards":  # the shard groups' deployment gets its configuration from the run that submits it
            assert list(entry["parameters"]["configurations"]) == list(PAPER_CONFIGS)

    rebuild, regenerate = built["rebuild-dataset"], built["regenerate"]
    assert rebuild.entrypoint == "flows/rebuild.py:rebuild_dataset" and rebuild.work_pool_name == "control"
    assert rebuild.parameters["source"] == "syncd" and rebuild.parameters["root"] == "/data/nearid"
    cron = rebuild.schedules[0].schedule
    assert (cron.cron, cron.timezone) == ("0 3 * * 1", "UTC")
    dates = asyncio.run(CronSchedule(cron=cron.cron, timezone=cron.timezone).get_dates(2, start=datetime(2026, 1, 1)))
    assert [d.isoformat() for d in dates] == ["2026-01-05T03:00:00+00:00", "2026-01-12T03:00:00+00:00"]
    assert all(d.astimezone(UTC).weekday() == 0 for d in dates)

    assert regenerate.entrypoint == "flows/regenerate.py:regenerate_flow" and regenerate.schedules == []
    assert {"configurations", "shards", "force"} <= set(regenerate.parameters)
    assert regenerate.parameters["shards"] is None and regenerate.parameters["force"] is False
    from prefect.utilities.callables import parameter_schema

    from flows.regenerate import regenerate_flow

    schema = parameter_schema(regenerate_flow)
    assert {"root", "configurations"} <= set(schema.required) and "shards" in schema.properties


def test_on_demand_parameters_are_accepted(spec: dict) -> None:
    from prefect.exceptions import ParameterTypeError

    from flows.regenerate import regenerate_flow

    base = _deployment(spec, "regenerate")["parameters"]
    for override in ({"shards": "0-3,7"}, {"shards": [3, 7]}, {"force": True, "configurations": ["sdxl-1024"]}):
        regenerate_flow.validate_parameters({**base, **override})
    with pytest.raises(ParameterTypeError):
        regenerate_flow.validate_parameters({**base, "force": "sometimes"})


def test_training_has_its_own_work_queue(spec: dict) -> None:
    """Training goes to the ``training`` queue of the ``gpu`` pool (a worker that sees all its GPUs, see
    docs/scale-out.md); dataset runs stay on ``default``."""
    from prefect.cli.deploy._models import PrefectYamlModel

    deployments = PrefectYamlModel.model_validate(spec).deployments
    queues = {d.name: (d.work_pool.name, d.work_pool.work_queue_name) for d in deployments}
    assert queues.pop("retrain-and-benchmark") == ("gpu", "training")
    assert queues and all(queue == "default" for _, queue in queues.values())  # nothing else lands on it
    assert "--work-queue training" in (REPO / "docs" / "scale-out.md").read_text()


def test_retrain_deployment_points_at_its_flow(spec: dict) -> None:
    entry = _deployment(spec, "retrain-and-benchmark")
    assert entry["entrypoint"] == "flows/retrain.py:retrain_and_benchmark" and entry["schedules"] == []
    if (REPO / "flows" / "retrain.py").exists():  # the flow lands separately; once present it must load
        from prefect.flows import load_flow_from_entrypoint

        flow = load_flow_from_entrypoint(entry["entrypoint"])
        assert callable(flow.fn)
        if entry.get("parameters"):
            flow.validate_parameters(entry["parameters"])
