"""The bad-input corpus, generate --set and validate: each case runs the real entry point and asserts its exact
outcome (the reject code of a row or view, or the exit status and message of a refused run)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nearid.cli import main
from storage import TableReader, load_manifest
from tests.bad_input.helpers import errors_of, run_cli


# -- generate --set: typed overrides ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps=abc", "'steps' must be an integer, got 'abc'"),
        ("steps=2.5", "'steps' must be an integer, got 2.5"),
        ("steps=true", "'steps' must be an integer, got True"),
        ("guidance=NaN", "'guidance' must be a finite number"),
        ("guidance=Infinity", "'guidance' must be a finite number"),
        ("resize_mode=banana", "'resize_mode' must be one of 'square', 'shortest-side'"),
        ("composite=1", "'composite' must be bool"),
        ("models=[]", "cannot be overridden"),
        ("colour=red", "unknown configuration fields \\['colour'\\]"),
        ("batch_size=0", "batch_size >= 1 required"),
        ("resolution=-16", "resolution -16 must be >= 16"),
        ("strength=2", "strength must be in \\(0, 1\\]"),
        ("steps", "expected KEY=VALUE"),
    ],
)
def test_generate_override_refused(
    override: str, message: str, procedural_root: str, capsys: pytest.CaptureFixture
) -> None:
    args = ["generate", "--data", procedural_root, "--config", "sdxl-512", "--set", override, "--no-progress"]
    assert run_cli(args) == 2
    assert re.search(message, capsys.readouterr().err)
    assert "distractors/sdxl-512" not in load_manifest(procedural_root).tables()


# -- validate: damaged roots -----------------------------------------------------------------------------------


def test_generate_rejects_an_undecodable_view_naming_shard_and_id(dataset_copy: str) -> None:
    from storage import ShardWriter, commit_shards

    entry = load_manifest(dataset_copy).table("identities")[0]
    rows = list(TableReader(dataset_copy, "identities").iter_rows(decode=False, shards=[entry]))
    rows[1]["images2"] = {"bytes": rows[1]["images2"]["bytes"][:300], "path": None}  # a truncated PNG
    with ShardWriter(dataset_copy, "identities", entry.path, entry.config_hash) as writer:
        for row in rows:
            writer.write(row)
    commit_shards(dataset_copy, [writer.entry])
    args = ["generate", "--data", dataset_copy, "--config", "procedural", "--set", "resolution=64", "--no-progress"]
    assert run_cli(args) == 0
    rejects = [r for r in TableReader(dataset_copy, "rejects").iter_rows() if r["stage"] == "generate"]
    assert [(r["reason"], r["id"], r["view"]) for r in rejects] == [("input-undecodable", rows[1]["id"], 2)]
    assert f"{entry.path} id={rows[1]['id']} images2" in rejects[0]["detail"]
    stats = load_manifest(dataset_copy).shards["distractors/procedural/shard-00000.parquet"].stats
    assert stats["images_in"] == stats["images_written"] + stats["images_rejected"] and stats["images_rejected"] == 1


def _damage(root: Path, how: str) -> None:
    manifest = root / "manifest.json"
    data = json.loads(manifest.read_text())
    first = sorted(data["shards"])[0]
    if how == "manifest not JSON":
        manifest.write_text("{oops")
    elif how == "manifest nested too deeply":
        manifest.write_text("[" * 100000 + "]" * 100000)
    elif how == "not a nearid manifest":
        manifest.write_text(json.dumps({"format": "something-else"}))
    elif how == "unknown schema version":
        data["schema_version"] = 99
        manifest.write_text(json.dumps(data))
    elif how == "short checksum":
        data["shards"][first]["sha256"] = "abc"
        manifest.write_text(json.dumps(data))
    elif how == "shard path leaves the root":
        data["shards"]["../outside.parquet"] = data["shards"].pop(first)
        manifest.write_text(json.dumps(data))
    elif how == "shard file deleted":
        (root / first).unlink()
    elif how == "shard truncated":
        path = root / first
        path.write_bytes(path.read_bytes()[:100])
    elif how == "shard bytes flipped":
        path = root / first
        body = bytearray(path.read_bytes())
        body[len(body) // 2] ^= 0xFF
        path.write_bytes(bytes(body))
    elif how == "planned shard never committed":
        data["plans"]["identities"]["identities/shard-09999.parquet"] = "x"
        manifest.write_text(json.dumps(data))
    elif how == "shard from another configuration":
        data["shards"][first]["config_hash"] = "not-the-plan"
        manifest.write_text(json.dumps(data))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "code"),
    [
        ("manifest not JSON", "manifest-invalid"),
        ("manifest nested too deeply", "manifest-invalid"),
        ("not a nearid manifest", "manifest-invalid"),
        ("unknown schema version", "manifest-invalid"),
        ("short checksum", "manifest-invalid"),
        ("shard path leaves the root", "manifest-invalid"),
        ("shard file deleted", "shard-missing"),
        ("shard truncated", "size-mismatch"),
        ("shard bytes flipped", "checksum-mismatch"),
        ("planned shard never committed", "incomplete"),
        ("shard from another configuration", "incomplete"),
    ],
)
def test_validate_reports_damage(how: str, code: str, dataset_copy: str, capsys: pytest.CaptureFixture) -> None:
    _damage(Path(dataset_copy), how)
    assert code in errors_of(dataset_copy)
    assert main(["validate", dataset_copy, "--no-progress"]) == 1
    assert f"[{code}]" in capsys.readouterr().out
