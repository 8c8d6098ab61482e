"""Official NearID layout: import -> export -> import is lossless; misalignment is refused."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from nearid.cli import main
from nearid.common.procedural import ProceduralConfig, plan_identities, render_identity
from storage import TableReader
from storage.codecs import encode_mask, encode_png
from storage.official import OfficialLayoutError, config_name_for, export_official, read_split_files
from storage.official_import import import_official


def build_official(folder: Path, n: int = 9) -> dict:
    """A small official-layout fixture: positives (img1..3 alias), two distractor datasets, split files."""
    import datasets

    config = ProceduralConfig(identities=n, image_size=40, seed=4)
    rows = [render_identity(p, config) for p in plan_identities(config)]
    image = datasets.Image()
    slots = range(1, 4)
    positives = {
        "id": [r["id"] for r in rows],
        "category": ["rigid"] * n,
        "category_description": [r["category_description"] for r in rows],
        "objaverse_id": [r["objaverse_id"] for r in rows],
        "n_images": [r["n_images"] for r in rows],
        "quality": [0.5 + i for i in range(n)],
    }
    for k in slots:
        positives[f"img{k}"] = [
            {"bytes": encode_png(r[f"images{k}"]), "path": None} if f"images{k}" in r else None for r in rows
        ]
        positives[f"masks{k}"] = [
            {"bytes": encode_mask(r[f"masks{k}"]), "path": None} if f"masks{k}" in r else None for r in rows
        ]
        positives[f"prompts{k}"] = [r.get(f"prompts{k}") for r in rows]
    features = {k: image for k in positives if k[:-1] in ("img", "masks")}
    ds = datasets.Dataset.from_dict(positives)
    for column, feature in features.items():
        ds = ds.cast_column(column, feature)
    ds.save_to_disk(str(folder / "NearID"))
    rng = np.random.default_rng(0)
    for suffix, keep in (("Flux", 0.8), ("SDXL_1024", 0.5)):
        dis = {"id": positives["id"]}
        for k in slots:
            dis[f"nimg{k}"] = [
                {"bytes": encode_png(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)), "path": None}
                if f"images{k}" in r and (rng.random() < keep or k == 1)
                else None
                for r in rows
            ]
            dis[f"prompts{k}"] = [f"a different object {i} {k}" for i in range(n)]
        d = datasets.Dataset.from_dict(dis)
        for k in slots:
            d = d.cast_column(f"nimg{k}", image)
        d.save_to_disk(str(folder / f"NearID-{suffix}"))
    (folder / "splits").mkdir()
    (folder / "splits" / "train.json").write_text(json.dumps(list(range(2, n))))
    (folder / "splits" / "val.json").write_text(json.dumps({"indices": [0]}))
    (folder / "splits" / "test.json").write_text(json.dumps([1]))
    return positives


def snapshot(root: str) -> dict:
    """Everything the round trip must preserve, keyed by id."""
    out = {}
    for row in TableReader(root, "identities").iter_rows(decode=False):
        out[row["id"]] = {
            "split": row["split"],
            "description": row["category_description"],
            "objaverse": row["objaverse_id"],
            "quality": row["quality"],
            "images": [row[f"images{k}"] and row[f"images{k}"]["bytes"] for k in range(1, 4)],
            "masks": [row[f"masks{k}"] and row[f"masks{k}"]["bytes"] for k in range(1, 4)],
            "prompts": [row[f"prompts{k}"] for k in range(1, 4)],
        }
    for table in ("distractors/flux-fill-512", "distractors/sdxl-1024"):
        for row in TableReader(root, table).iter_rows(decode=False):
            out[row["id"]][table] = [row[f"nimg{k}"] and row[f"nimg{k}"]["bytes"] for k in range(1, 4)]
    return out


def test_import_export_import_is_lossless(tmp_path: Path) -> None:
    official = tmp_path / "official"
    positives = build_official(official)
    first = str(tmp_path / "first")
    summary = import_official(
        official / "NearID",
        first,
        {
            config_name_for(official / "NearID-Flux"): official / "NearID-Flux",
            "sdxl-1024": official / "NearID-SDXL_1024",
        },
        split_dir=official / "splits",
        shard_size=4,
    )
    assert summary.identities == 9 and summary.reencoded_images == 0 and summary.reencoded_masks == 0
    before = snapshot(first)
    assert sorted(before) == sorted(positives["id"])
    assert [before[i]["split"] for i in positives["id"][:2]] == ["val", "test"]
    assert before[positives["id"][3]]["images"][0] == positives["img1"][3]["bytes"]

    exported = tmp_path / "exported"
    written = export_official(first, exported)
    assert written["NearID"] == 9 and set(written) == {"NearID", "NearID-Flux", "NearID-SDXL_1024"}
    second = str(tmp_path / "second")
    import_official(
        exported / "NearID",
        second,
        {"flux-fill-512": exported / "NearID-Flux", "sdxl-1024": exported / "NearID-SDXL_1024"},
        split_dir=exported / "splits",
        shard_size=5,
    )
    assert snapshot(second) == before


def test_export_is_row_aligned_for_official_loaders(tmp_path: Path) -> None:
    import datasets

    official = tmp_path / "official"
    build_official(official)
    root = str(tmp_path / "root")
    import_official(official / "NearID", root, {"sdxl-1024": official / "NearID-SDXL_1024"}, official / "splits")
    export_official(root, tmp_path / "out")
    pos = datasets.load_from_disk(str(tmp_path / "out" / "NearID"))["train"]  # a DatasetDict, as on the hub
    neg = datasets.load_from_disk(str(tmp_path / "out" / "NearID-SDXL_1024"))["train"]
    assert len(pos) == len(neg) == 9 and pos["id"] == neg["id"]
    assert isinstance(pos.features["images1"], datasets.Image) and pos[0]["images1"].mode == "RGB"
    assert any(row["nimg2"] is None for row in neg)  # empty slots survive as None
    test_rows = json.loads((tmp_path / "out" / "splits" / "test.json").read_text())
    assert [pos[i]["split"] for i in test_rows] == ["test"]


def test_misaligned_distractors_are_refused(tmp_path: Path) -> None:
    import datasets

    official = tmp_path / "official"
    build_official(official)
    broken = datasets.load_from_disk(str(official / "NearID-Flux"))
    broken = broken.select(list(reversed(range(len(broken)))))
    broken.save_to_disk(str(tmp_path / "NearID-Flux"))
    with pytest.raises(OfficialLayoutError, match="row 0 has id"):
        import_official(official / "NearID", str(tmp_path / "root"), {"flux-fill-512": tmp_path / "NearID-Flux"})
    short = datasets.load_from_disk(str(official / "NearID-Flux")).select(range(5))
    short.save_to_disk(str(tmp_path / "short"))
    with pytest.raises(OfficialLayoutError, match="not row-aligned"):
        import_official(official / "NearID", str(tmp_path / "root2"), {"flux-fill-512": tmp_path / "short"})
    for root in ("root", "root2"):  # refused before anything was written
        assert not (tmp_path / root / "manifest.json").exists()


@pytest.mark.parametrize(
    "files, message",
    [
        ({"val.json": [0], "test.json": [0]}, "already in the val split"),
        ({"val.json": [0, 0], "test.json": [1]}, "duplicate row positions"),
        ({"val.json": [12], "test.json": [1]}, "out of range"),
        ({"val.json": ["a"], "test.json": [1]}, "integer row positions"),
        ({"train.json": [2], "val.json": [0], "test.json": [1]}, "leave 7 of 10 rows"),
        ({"val.json": [0]}, "test.json is missing"),
    ],
)
def test_split_files_are_checked(tmp_path: Path, files: dict, message: str) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    with pytest.raises(OfficialLayoutError, match=message):
        read_split_files(tmp_path, 10)


def test_split_files_without_train_fill_the_rest(tmp_path: Path) -> None:
    (tmp_path / "val.json").write_text("[3]")
    (tmp_path / "test.json").write_text('{"indices": [0, 1]}')
    assert read_split_files(tmp_path, 5) == {0: "test", 1: "test", 2: "train", 3: "val", 4: "train"}


def test_cli_import_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    official = tmp_path / "official"
    build_official(official)
    root = str(tmp_path / "root")
    args = ["import-hf", str(official / "NearID"), "--out", root, "--distractors", str(official / "NearID-Flux")]
    assert main([*args, "--splits", str(official / "splits")]) == 0
    assert '"flux-fill-512"' in capsys.readouterr().out
    assert main(["validate", root, "--no-progress"]) == 0
    assert main(["export-hf", root, "--out", str(tmp_path / "out")]) == 0
    assert "NearID-Flux" in capsys.readouterr().out


def test_exports_load_with_the_lines_their_cards_show(tmp_path: Path) -> None:
    """Each exported dataset's README (YAML front matter, loading lines) works in a fresh process: the
    ``DatasetDict`` through ``load_from_disk`` (the authors' evaluation reads its keys) and ``load_dataset(...,
    split="train")`` (their training script's positives loader)."""

    official = tmp_path / "official"
    build_official(official)
    root = str(tmp_path / "root")
    import_official(official / "NearID", root, {"sdxl-1024": official / "NearID-SDXL_1024"}, official / "splits")
    out = tmp_path / "out"
    export_official(root, out)
    for name in ("NearID", "NearID-SDXL_1024"):
        card = (out / name / "README.md").read_text()
        front = yaml.safe_load(card.split("---")[1])
        assert front["configs"][0]["data_files"][0]["split"] == "train"
        code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
        lines = [line.split("#")[0].rstrip() for line in code.splitlines() if line.strip()]
        script = (
            "\n".join(lines) + "\nprint(len(ds), ds['id'][:3], sorted(datasets.load_from_disk('" + name + "').keys()))"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=out, capture_output=True, text=True, timeout=120, check=True
        )
        ids = TableReader(root, "identities").ids().tolist()
        assert result.stdout.strip().endswith(f"9 {ids[:3]} ['train']"), result.stdout
