"""``nearid regenerate`` and ``nearid rebuild``: the flows run from the command line on a real Prefect API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nearid.cli import main
from storage import load_manifest


FAST = ["--set", "steps=2", "--set", "resolution=64"]


@pytest.fixture
def server_url(prefect_api, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test server, named the way a user names theirs, so the commands leave the embedded default alone."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    monkeypatch.setenv("PREFECT_API_URL", url)
    return url


def test_regenerate_runs_the_flow(server_url: str, dataset_copy: str, tmp_path: Path, capsys) -> None:
    args = ["regenerate", dataset_copy, "--config", "null", *FAST, "--slot-dir", str(tmp_path / "slots")]
    assert main([*args, "--shards", "0", "--retries", "0", "--run-dir", str(tmp_path / "run")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shards_written"] == 1
    assert set(load_manifest(dataset_copy).tables()) >= {"identities", "distractors/null"}
    assert not (tmp_path / "run" / ".prefect").exists()  # the user's server, not the embedded default
    assert main([*args, "--splits", "nope"]) == 2  # bad input: the one-line error
    assert capsys.readouterr().err.splitlines()[-1] == "error: unknown splits ['nope']: use train, val, test"


def test_rebuild_runs_the_flow_and_prints_the_version(server_url: str, tmp_path: Path, capsys) -> None:
    root = str(tmp_path / "data")
    args = ["rebuild", root, "--config", "null", "--identities", "6", "--image-size", "48", "--shard-size", "3"]
    assert main([*args, *FAST, "--retries", "0", "--slot-dir", str(tmp_path / "slots")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["version"] == load_manifest(root).version and summary["validation"]["errors"] == 0
    assert (Path(root) / "versions" / f"{summary['version']}.json").is_file()
