"""The bad-input corpus, evaluate and the model loaders: each case runs the real entry point and asserts its exact
outcome (the reject code of a row or view, or the exit status and message of a refused run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from nearid.cli import main
from storage import TableReader, load_manifest
from tests.bad_input.helpers import SIZE, run_cli


# -- evaluate and model loaders ----------------------------------------------------------------------------------


def test_evaluate_names_the_shard_and_id_of_a_broken_image(
    dataset_copy: str, tiny_models_dir: Path, tmp_path: Path, capsys
) -> None:
    from generators.run import generate_distractors

    generate_distractors(dataset_copy, ["procedural"], overrides={"resolution": 64}, progress=False)
    reader = TableReader(dataset_copy, "distractors/procedural")
    victim = reader.get(int(reader.ids()[0]), decode=False)
    import pyarrow.parquet as pq

    shard = sorted((Path(dataset_copy) / "distractors" / "procedural").glob("shard-*.parquet"))[0]
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[0]["nimg1"] = {"bytes": b"\x89PNG\r\n\x1a\nbroken", "path": None}
    from storage import ShardWriter, commit_shards

    entry = load_manifest(dataset_copy).shards[str(shard.relative_to(dataset_copy))]
    with ShardWriter(dataset_copy, "distractors/procedural", entry.path, entry.config_hash) as writer:
        for row in rows:
            writer.write(row)
    commit_shards(dataset_copy, [writer.entry])
    args = ["evaluate", "--data", dataset_copy, "--out", str(tmp_path / "run"), "--scorer", "siglip2-map"]
    args += ["--model-dir", str(tiny_models_dir), "--source", "procedural", "--split", "all", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{entry.path} id={victim['id']} nimg1" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scorer", "no-such-scorer"], "unknown scorer"),
        (["--scorer", "siglip2-map", "--source", "no-such-source"], "no-such-source"),
        (["--scorer", "siglip2-map", "--data", "/nonexistent/root"], "no manifest"),
    ],
)
def test_evaluate_refused(args: list[str], message: str, procedural_root: str, tmp_path: Path, capsys) -> None:
    base = ["evaluate", "--out", str(tmp_path / "run"), "--no-progress"]
    if "--data" not in args:
        base += ["--data", procedural_root]
    assert main([*base, *args]) == 2
    assert message in capsys.readouterr().err


def test_pickle_only_weights_are_refused(tiny_models_dir: Path, tmp_path: Path, capsys) -> None:
    from transformers import SiglipVisionModel

    from nearid.model.nearid_model import NearIDModel

    folder = tmp_path / "pickled-siglip"  # the layout of an older hub snapshot: config and a pickled state dict
    model = SiglipVisionModel.from_pretrained(tiny_models_dir / "siglip2")
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    for name in ("preprocessor_config.json",):
        (folder / name).write_bytes((tiny_models_dir / "siglip2" / name).read_bytes())
    assert not list(folder.glob("*.safetensors")) and list(folder.glob("*.bin"))
    with pytest.raises(FileNotFoundError, match="nearid loads safetensors only"):
        NearIDModel.from_pretrained(str(folder))
    images = [Image.new("RGB", (SIZE, SIZE))]
    from nearid.evaluation.scorers import ScorerSettings, build_scorer

    scorer = build_scorer("siglip2-map", ScorerSettings(models=(("siglip2-map", str(folder)),)))
    with pytest.raises(FileNotFoundError, match="nearid loads safetensors only"):
        scorer.embed(images)


def test_pickle_only_pipeline_is_refused(tiny_models_dir: Path, tmp_path: Path, procedural_root: str, capsys) -> None:
    from diffusers import FluxFillPipeline

    models = tmp_path / "models"
    FluxFillPipeline.from_pretrained(tiny_models_dir / "flux-fill").save_pretrained(
        models / "flux-fill", safe_serialization=False
    )
    assert list((models / "flux-fill" / "transformer").glob("*.bin"))  # diffusers pickles its own models
    args = ["generate", "--data", procedural_root, "--config", "flux-fill-512", "--model-dir", str(models)]
    args += ["--set", "steps=2", "--set", "resolution=64", "--set", "output_size=64", "--no-progress"]
    assert run_cli(args) == 2
    assert "nearid loads safetensors only" in capsys.readouterr().err
