"""retrain_and_benchmark: the whole demo chain under a real Prefect API, and a rejected retrain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nearid.model.acceptance import ACCEPTED_FILE


def test_demo_chain_end_to_end(prefect_api, tmp_path: Path) -> None:
    from flows.demo import demo_flow
    from flows.retrain import retrain_and_benchmark
    from nearid.model.acceptance import RegressionError

    out = tmp_path / "demo"
    summary = demo_flow(out=str(out), identities=48, test_identities=8, val_identities=4, epochs=1)
    report = Path(summary["report"])
    assert (report / "report.html").is_file() and (report / "report.md").is_file()
    assert set(summary["timings"]) >= {"tiny models", "curate", "generate", "train", "export", "evaluate + report"}
    evaluated = json.loads((report.parent / "results.json").read_text())
    labels = [entry["label"] for entry in evaluated["scorers"]]
    assert labels == ["siglip2-map", "release:release"]
    sources = evaluated["scorers"][1]["nearid"]["full"]["sources"]
    assert len(sources) == 10 and all(v["n_samples"] == 8 for v in sources.values())
    assert json.loads((out / "models" / ACCEPTED_FILE).read_text())["model"].endswith("release")

    # a model that scores worse than the accepted one by more than the tolerance fails the run with the numbers
    accepted = out / "models" / ACCEPTED_FILE
    record = json.loads(accepted.read_text())
    record["metrics"]["ssr"] = 1000.0
    accepted.write_text(json.dumps(record))
    accepted_release = {p: p.read_bytes() for p in (out / "train" / "release").rglob("*") if p.is_file()}
    with pytest.raises(RegressionError, match="accepted model .* has 1000.00"):
        retrain_and_benchmark(
            data_root=str(out / "data"),
            train_config=str(out / "train.yaml"),
            models_dir=str(out / "models"),
            model_dir=str(out / "tiny-models"),
            tolerance=1.0,
        )
    # the rejected retrain trained and exported into a run folder of its own: the accepted model is untouched
    assert (out / "train-2" / "release" / "model.safetensors").is_file()
    assert {p: p.read_bytes() for p in (out / "train" / "release").rglob("*") if p.is_file()} == accepted_release
    assert json.loads(accepted.read_text())["metrics"]["ssr"] == 1000.0
