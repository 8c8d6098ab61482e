from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nearid.common.procedural import ProceduralConfig
from nearid.offline.syncd_layout import write_syncd_folder
from storage import load_manifest
from storage.validate import validate


def test_import_flows_is_light() -> None:
    code = "import sys, flows.curate; bad = {'torch', 'diffusers'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_curate_flow_runs_under_prefect(prefect_api, tmp_path: Path) -> None:
    from prefect import get_client

    from flows.curate import curate_flow

    out = str(tmp_path / "data")
    state = curate_flow(out=out, identities=7, image_size=40, shard_size=3, return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result["identities"] == 7 and result["shards_written"] == 3
    assert [p for p in validate(out, progress=False) if p.severity == "error"] == []

    with get_client(sync_client=True) as client:  # the API recorded the run
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state.is_completed() and run.parameters["identities"] == 7


def test_curate_flow_syncd_source(tmp_path: Path) -> None:
    from flows.curate import curate_flow

    folder = tmp_path / "syncd"
    write_syncd_folder(folder, ProceduralConfig(identities=8, image_size=40), deformable_every=4)
    result = curate_flow.fn(out=str(tmp_path / "out"), source="syncd", input_dir=str(folder), shard_size=4)
    assert result["identities"] == 6 and result["rejected"] == 2
    assert len(load_manifest(str(tmp_path / "out")).table("identities")) == 2
    with pytest.raises(ValueError, match="needs input_dir"):
        curate_flow.fn(out=str(tmp_path / "x"), source="syncd")
