"""PowerPaint v2 from the hub as it is: a cached snapshot in the hub's layout (pickle-only text encoder, the base UNet
named ``diffusion_pytorch_model-002``), converted once with ``nearid convert-weights``, then generating offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from generators.registry import POWERPAINT, get_config
from nearid.offline.hub_layout import write_powerpaint_repo
from storage import TableReader


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nearid.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
    )


def test_powerpaint_from_the_hubs_layout(tmp_path: Path, tiny_models_dir: Path, dataset_copy: str) -> None:
    snapshot = write_powerpaint_repo(tiny_models_dir, tmp_path / "hub", tmp_path / "stage")
    assert (snapshot / "realisticVisionV60B1_v51VAE" / "unet" / "diffusion_pytorch_model-002.safetensors").is_file()
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    generate = ["generate", "--data", dataset_copy, "--config", "powerpaint", "--splits", "test", "--no-progress"]
    generate += ["--set", "steps=2", "--set", "resolution=64", "--set", "output_size=64"]

    refused = _cli(*generate, env=env)  # no --model-dir: the hub path
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2 and len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "pytorch_model.bin" in errors[0] and f"nearid convert-weights {snapshot}" in errors[0]

    converted = _cli("convert-weights", str(snapshot), env=env)
    assert converted.returncode == 0, converted.stderr
    assert "pytorch_model.bin -> model.safetensors: wrote" in converted.stdout
    assert "diffusion_pytorch_model-002.bin -> diffusion_pytorch_model-002.safetensors: exists" in converted.stdout
    again = _cli("convert-weights", str(snapshot), env=env)
    assert "wrote" not in again.stdout  # once is enough

    bogus = _cli(*generate, "--revision", f"{POWERPAINT.hub_id}=0123abcd", env=env)  # a commit not in the cache
    errors = [line for line in bogus.stderr.splitlines() if line.startswith("error:")]
    assert bogus.returncode == 2 and len(errors) == 1 and "Traceback" not in bogus.stderr, bogus.stderr

    made = _cli(*generate, "--revision", f"{POWERPAINT.hub_id}={snapshot.name}", env=env)  # pinned
    assert made.returncode == 0, made.stderr[-3000:]
    rows = list(TableReader(dataset_copy, "distractors/powerpaint").iter_rows())
    assert rows and all(row["nimg1"] is not None for row in rows)
    assert {tuple(row["model_ids"]) for row in rows} == {(POWERPAINT.hub_id, POWERPAINT.hub_id)}
    assert {tuple(row["model_revisions"]) for row in rows} == {(snapshot.name, snapshot.name)}  # the commit used
    pinned = get_config("powerpaint").with_overrides(steps=2, resolution=64, output_size=64)
    pinned = pinned.with_revisions({POWERPAINT.hub_id: snapshot.name})
    assert {row["params_hash"] for row in rows} == {pinned.params_hash()}  # the pin is part of the hash
