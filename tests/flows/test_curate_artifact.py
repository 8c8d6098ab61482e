"""The ``curate`` flow publishes a markdown artifact of its run: counts per split, refusals by reason and the
refused rows, read back here through the Prefect API."""

from __future__ import annotations

import json
from pathlib import Path

from nearid.common.procedural import ProceduralConfig
from nearid.offline.syncd_layout import write_syncd_folder


def _artifacts(flow_run_id: object) -> list[object]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.curate import ARTIFACT_KEY

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return [a for a in found if a.key == ARTIFACT_KEY]


def test_curate_publishes_splits_and_refused_rows(prefect_api, tmp_path: Path) -> None:
    from flows.curate import curate_flow

    folder = tmp_path / "syncd"
    write_syncd_folder(folder, ProceduralConfig(identities=8, image_size=40), deformable_every=4)
    out = str(tmp_path / "out")
    state = curate_flow(out=out, source="syncd", input_dir=str(folder), shard_size=4, return_state=True)
    assert state.is_completed()
    (artifact,) = _artifacts(state.state_details.flow_run_id)
    assert artifact.type == "markdown" and artifact.description == f"curation of {out}"
    text = artifact.data
    report = json.loads((Path(out) / "reports" / "curation.json").read_text())
    assert report["rejected_identities"] == 2
    for split, count in report["splits"].items():
        assert f"| {split} | {count} |" in text
    assert f"| **total** | {report['kept']} |" in text
    for reason, count in report["identity_rejects_by_reason"].items():
        assert f"| identity | `{reason}` | {count} |" in text
    rows = [line for line in text.splitlines() if "`deformable`" in line and "metadata.json" in line]
    assert len(rows) == 2 and "## Refused rows (2 of 2" in text  # one row per refused identity, with its reason
    assert "category" in rows[0]  # the detail says why


def test_curate_without_refusals_says_none(prefect_api, tmp_path: Path) -> None:
    from flows.curate import curate_flow

    state = curate_flow(out=str(tmp_path / "p"), identities=7, image_size=40, shard_size=3, return_state=True)
    (artifact,) = _artifacts(state.state_details.flow_run_id)
    assert "| - | none | 0 |" in artifact.data and "Refused rows" not in artifact.data
    assert "7 identities in, 7 kept, 0 refused" in artifact.data
    assert "shards: 3 written, 0 already complete" in artifact.data
