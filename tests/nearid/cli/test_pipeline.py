"""``nearid publish`` and ``nearid accept``: library calls with a printed outcome and an exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nearid.cli import main
from storage import load_manifest


def test_publish_prints_the_version_and_refuses_an_invalid_dataset(
    dataset_copy: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["publish", dataset_copy, "--no-progress"]) == 0
    version = load_manifest(dataset_copy).version
    out = capsys.readouterr().out
    assert out.startswith(f"{version}  (published; record versions/{version}.json)")
    assert main(["publish", dataset_copy, "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(f"{version}  (unchanged, current")

    shard = sorted((Path(dataset_copy) / "identities").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["publish", dataset_copy, "--no-decode", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"[checksum-mismatch] identities/{shard.name}" in err
    assert err.splitlines()[-1] == f"error: {dataset_copy}: 1 validation errors, no version published"
    assert load_manifest(dataset_copy).version == version
    assert main(["publish", str(Path(dataset_copy) / "missing")]) == 2  # no manifest: the one-line error


def _results(folder: Path, ssr: float) -> Path:
    groups = {"primary": {"ssr": ssr, "pa": ssr + 5}}
    scorers = [
        {
            "label": "siglip2-map",
            "name": "siglip2-map",
            "nearid": {"full": {"groups": {"primary": {"ssr": 1, "pa": 2}}}},
        },
        {
            "label": f"release:{folder.name}",
            "name": "release",
            "model": str(folder),
            "nearid": {"full": {"groups": groups}},
        },
    ]
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"scorers": scorers}))
    return folder / "results.json"


def test_accept_prints_both_numbers_and_exits_1_on_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    models = str(tmp_path / "models")
    assert main(["accept", str(_results(tmp_path / "a", 60.0)), "--models-dir", models]) == 0
    assert capsys.readouterr().out.startswith(f"accepted the new model {tmp_path / 'a'}: primary SSR 60.00 (PA 65.00)")
    assert (
        main(["accept", str(_results(tmp_path / "b", 50.0).parent), "--models-dir", models, "--tolerance", "2"]) == 1
    )
    out = capsys.readouterr().out
    assert out.startswith("rejected (regression) the new model") and "SSR 50.00" in out
    assert f"the accepted model {tmp_path / 'a'} has 60.00 (PA 65.00); tolerance 2.0 points" in out
    assert json.loads((tmp_path / "models" / "accepted.json").read_text())["model"] == str(tmp_path / "a")
    assert main(["accept", str(_results(tmp_path / "c", 59.5)), "--models-dir", models]) == 0  # within tolerance
    assert main(["accept", str(tmp_path / "nowhere"), "--models-dir", models]) == 2
    assert capsys.readouterr().err.count("\n") == 1
