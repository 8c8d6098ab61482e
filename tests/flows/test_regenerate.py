from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.gpu import Slot, SlotPool
from flows.regenerate import generate_command, generate_group
from flows.shards import (
    ShardGroup,
    ShardJob,
    ShardRunOptions,
    group_shards,
    plan_shards,
    prune_stale_shards,
    shard_selection,
    split_selection,
)
from generators.run import generate_distractors
from storage import load_manifest
from storage.validate import validate


FAST = {"steps": 2, "resolution": 64}


def test_import_is_light() -> None:
    code = (
        "import sys, flows.regenerate, flows.rebuild, flows.gpu, flows.settings, flows.fan_out, flows.ray_engine; "
        "bad = {'torch', 'diffusers', 'cv2'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    # a Ray actor imports flows.ray_engine: no Prefect there (the driver imports it for the cancel watch)
    code = "import sys, flows.ray_engine; assert not any(m.startswith('prefect') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parameter_parsing() -> None:
    assert shard_selection(None) is None and shard_selection("0-3,7") == "0-3,7" and shard_selection([3, 7]) == "3,7"
    assert shard_selection(3) == "3"  # `prefect deployment run ... -p shards=3`
    from flows.regenerate import regenerate_flow

    for given in (3, "3", [3], "0-3,7"):  # Prefect's own validation of a deployment's parameters
        assert regenerate_flow.validate_parameters({"root": "/d", "configurations": ["null"], "shards": given})
    assert split_selection(None) is None and split_selection("test,val, test") == ("test", "val")
    assert split_selection(["test"]) == ("test",)
    with pytest.raises(ValueError, match="unknown splits"):
        split_selection(["dev"])


def test_shards_are_grouped_one_model_load_per_place() -> None:
    jobs = [ShardJob(c, k, f"distractors/{c}/shard-{k:05d}.parquet", "h") for c in ("a", "b") for k in range(5)]
    groups = group_shards(jobs[::-1], width=2)  # any order in, contiguous groups out
    assert [g.label for g in groups] == ["b/00000-00002", "b/00003-00004", "a/00000-00002", "a/00003-00004"]
    assert [g.label for g in group_shards(jobs, width=8)][:5] == [f"a/{k:05d}" for k in range(5)]  # never empty
    assert [g.indices for g in group_shards(jobs[:5], width=1, shards_per_task=2)] == [[0, 1], [2, 3], [4]]
    assert ShardGroup("a", (jobs[0], jobs[3])).label == "a/00000,00003"
    with pytest.raises(ValueError, match="one or more shards of 'a' only"):
        ShardGroup("a", (jobs[0], jobs[5]))
    with pytest.raises(ValueError, match="width must be >= 1"):
        group_shards(jobs, width=0)


@pytest.mark.parametrize("splits", [None, ["test"]])
def test_planned_hash_is_the_hash_nearid_generate_records(dataset_copy: str, splits: list[str] | None) -> None:
    before = plan_shards(dataset_copy, ["procedural", "null"], "0-1", FAST, splits)
    assert [(j.config, j.index, j.complete) for j in before] == [
        ("procedural", 0, False),
        ("procedural", 1, False),
        ("null", 0, False),
        ("null", 1, False),
    ]
    assert before[0].path == "distractors/procedural/shard-00000.parquet"
    generate_distractors(
        dataset_copy, ["procedural", "null"], shards="1", overrides=FAST, splits=splits, progress=False
    )
    manifest = load_manifest(dataset_copy)
    after = plan_shards(dataset_copy, ["procedural", "null"], [0, 1], FAST, splits)
    assert [j.complete for j in after] == [False, True, False, True]
    for job in after:
        if job.complete:
            assert manifest.shards[job.path].config_hash == job.config_hash
    other = plan_shards(dataset_copy, ["procedural"], "1", {"steps": 3, "resolution": 64}, splits)
    assert not other[0].complete  # another parameter value: another hash, not complete


def test_plan_refuses_a_root_without_identities(tmp_path: Path) -> None:
    from storage import commit_shards

    commit_shards(str(tmp_path), [])
    with pytest.raises(ValueError, match="curate first"):
        plan_shards(str(tmp_path), ["procedural"])


def test_command_line_follows_the_slot_and_the_options() -> None:
    job = ShardJob("sdxl-512", 3, "distractors/sdxl-512/shard-00003.parquet", "abc")
    options = ShardRunOptions(
        "/data", force=True, model_dir="/m", overrides={"steps": 2, "prompt_template": "a {description}"}
    )
    gpu = generate_command(job.config, [job.index], options, Slot("gpu-1", "1"))
    assert gpu[:4] == [sys.executable, "-m", "nearid.cli", "generate"]
    text = " ".join(gpu)
    assert "--shards 3" in text and "--device cuda" in text and "--dtype bf16" in text and "--force" in text
    assert gpu[gpu.index("--model-dir") + 1] == "/m"
    assert ["--set", 'prompt_template="a {description}"'] == gpu[-4:-2] and gpu[-1] == "steps=2"
    cpu = generate_command(
        job.config, [2, 3], ShardRunOptions("/data", device="cuda:1", dtype="fp16", splits=["test"]), Slot("c", None)
    )
    assert cpu[cpu.index("--shards") + 1] == "2,3"  # a group: one child, one model load
    assert cpu[cpu.index("--device") + 1] == "cuda:1" and cpu[cpu.index("--dtype") + 1] == "fp16"
    assert cpu[cpu.index("--splits") + 1] == "test" and "--force" not in cpu


def test_shard_task_skips_a_shard_completed_meanwhile_without_a_child(dataset_copy: str, tmp_path: Path) -> None:
    generate_distractors(dataset_copy, ["null"], shards="0", overrides=FAST, progress=False)
    job = plan_shards(dataset_copy, ["null"], "0", FAST)[0]
    stale = ShardJob(job.config, job.index, job.path, job.config_hash, complete=False)  # planned before it was done
    pool = SlotPool([None], tmp_path / "slots")
    with pool.acquire():  # the only slot is busy: a task that needed a child would wait and time out
        options = ShardRunOptions(dataset_copy, overrides=FAST, slot_dir=str(tmp_path / "slots"))
        result = generate_group.fn(ShardGroup("null", (stale,)), options)
    assert result == [{"path": job.path, "status": "skipped", "seconds": 0.0}]


def test_shard_task_writes_through_the_cli_and_checks_the_committed_hash(dataset_copy: str, tmp_path: Path) -> None:
    options = ShardRunOptions(dataset_copy, overrides=FAST, slot_dir=str(tmp_path / "slots"))
    job = plan_shards(dataset_copy, ["procedural"], "2", FAST)[0]
    dead = 4194311  # above the kernel's largest pid: the writer that left this file is gone
    partial = Path(dataset_copy) / "distractors" / "procedural" / f".shard-00002.parquet.{dead}-0123456789ab.tmp"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"left by a killed writer")
    (result,) = generate_group.fn(ShardGroup(job.config, (job,)), options)
    assert result["status"] == "written" and result["seconds"] > 0
    assert load_manifest(dataset_copy).is_complete(dataset_copy, job.path, job.config_hash, verify_checksum=True)
    assert not partial.exists()

    wrong = ShardJob(job.config, 1, job.path.replace("00002", "00001"), "0" * 16)
    with pytest.raises(RuntimeError, match=r"does not list \['distractors/procedural/shard-00001.parquet'\] with the"):
        generate_group.fn(ShardGroup(wrong.config, (wrong,)), options)
    assert SlotPool([None], tmp_path / "slots").try_acquire() is not None


def test_stale_shards_leave_the_manifest_with_their_rejects(dataset_copy: str) -> None:
    generate_distractors(dataset_copy, ["null"], overrides=FAST, progress=False)
    planned = plan_shards(dataset_copy, ["null"], "0-1", FAST)
    dropped = prune_stale_shards(dataset_copy, ["null"], planned)
    assert dropped == ["distractors/null/shard-00002.parquet", "rejects/null-00002.parquet"]
    manifest = load_manifest(dataset_copy)
    assert [e.path for e in manifest.table("distractors/null")] == [j.path for j in planned]
    assert "rejects/null-00002.parquet" not in manifest.shards
    assert prune_stale_shards(dataset_copy, ["null"], planned) == []


def test_regenerate_flow_skips_complete_shards_and_validates(prefect_api, dataset_copy: str, tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    from flows.regenerate import regenerate_flow

    common = {"root": dataset_copy, "configurations": ["procedural"], "overrides": FAST, "retries": 0}
    slots = str(tmp_path / "slots")
    first = regenerate_flow(shards="0,2", slot_dir=slots, **common)
    assert (first["shards_selected"], first["shards_written"], first["shards_skipped"]) == (2, 2, 0)
    assert first["validation"] == {"errors": 0, "warnings": 1}  # shard 1 is not there yet: incomplete, allowed
    written_at = {e.path: e.written_at for e in load_manifest(dataset_copy).table("distractors/procedural")}

    state = regenerate_flow(slot_dir=slots, return_state=True, **common)
    second = state.result()
    assert (second["shards_selected"], second["shards_written"], second["shards_skipped"]) == (3, 1, 2)
    entries = {e.path: e for e in load_manifest(dataset_copy).table("distractors/procedural")}
    assert len(entries) == 3 and all(entries[path].written_at == when for path, when in written_at.items())
    assert [p for p in validate(dataset_copy, progress=False) if p.severity == "error"] == []

    with get_client(sync_client=True) as client:  # only the missing shard got a task (and a child process)
        run_filter = FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[state.state_details.flow_run_id])
        )
        children = client.read_flow_runs(flow_run_filter=run_filter)
        assert [r.name for r in children] and len(children) == 1
        task_filter = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[children[0].id]))
        tasks = client.read_task_runs(task_run_filter=task_filter)
        run_id = ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=run_id))
    assert [t.name for t in tasks] == ["procedural/00001"]
    assert artifact.key == "nearid-regenerate" and artifact.type == "table"  # what happened to each shard
    assert artifact.description == f"1 written, 2 skipped in {dataset_copy}"
    assert [row["status"] for row in json.loads(artifact.data)] == ["written"]

    forced = regenerate_flow(shards=[1], force=True, slot_dir=slots, validate_at_end=False, **common)
    assert forced["shards_written"] == 1 and forced["validation"] is None
    assert load_manifest(dataset_copy).shards["distractors/procedural/shard-00001.parquet"].written_at >= (
        entries["distractors/procedural/shard-00001.parquet"].written_at
    )


def test_a_failing_shard_fails_the_run_naming_it(prefect_api, dataset_copy: str, tmp_path: Path) -> None:
    from flows.regenerate import regenerate_flow

    empty_models = tmp_path / "no-models"
    empty_models.mkdir()
    start = time.monotonic()
    state = regenerate_flow(
        root=dataset_copy,
        configurations=["flux-fill-512", "null"],
        shards="0",
        model_dir=str(empty_models),
        overrides=FAST,
        retries=1,  # missing weights fail the same way every time: no retry, no 30 s wait
        slot_dir=str(tmp_path / "slots"),
        return_state=True,
    )
    assert state.is_failed() and time.monotonic() - start < 30
    with pytest.raises(RuntimeError, match=r"1 of 2 shard groups failed:\nflux-fill-512/00000"):
        state.result()
    manifest = load_manifest(dataset_copy)
    assert "distractors/flux-fill-512/shard-00000.parquet" not in manifest.shards
    assert "distractors/null/shard-00000.parquet" in manifest.shards  # the other shard was not held back
    assert SlotPool([None], tmp_path / "slots").try_acquire() is not None


def test_fan_out_to_a_missing_deployment_names_the_fix(prefect_api, dataset_copy: str) -> None:
    from flows.regenerate import regenerate_flow

    state = regenerate_flow(
        root=dataset_copy, configurations=["null"], fan_out="regenerate/shards", return_state=True
    )  # nothing deployed on this server
    with pytest.raises(ValueError, match=r"no deployment 'regenerate/shards' on this server; .*prefect deploy --all"):
        state.result()
    assert load_manifest(dataset_copy).table("distractors/null") == []
    with pytest.raises(ValueError, match="choose one engine"):
        regenerate_flow(root=dataset_copy, configurations=["null"], fan_out="regenerate/shards", ray_address="auto")
