"""SynCD curation on a procedural SynCD-layout folder with every kind of bad input planted in it."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nearid.cli import main
from nearid.common.procedural import ProceduralConfig
from nearid.common.splits import default_split_sizes
from nearid.curation.syncd import SyncdCurationConfig, curate_syncd
from nearid.offline.syncd_layout import write_syncd_folder
from storage import TableReader, load_manifest
from storage.syncd import MetadataError
from storage.validate import validate


SIZE = 64


def _image_path(folder: Path, item: dict, view: int) -> Path:
    return folder / item["filenames"][view]


def _mask_path(folder: Path, item: dict, view: int) -> Path:
    image = _image_path(folder, item, view)
    return image.parent / "masks" / f"{image.stem}.jpg"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A SynCD folder with one defect per chosen item; returns it with the expected outcome."""
    folder = tmp_path_factory.mktemp("syncd")
    items = write_syncd_folder(folder, ProceduralConfig(identities=48, image_size=SIZE, seed=11), deformable_every=6)
    rigid = [i for i, item in enumerate(items) if item["category"] == "rigid"]
    three = [i for i in rigid if len(items[i]["filenames"]) == 3]
    two = [i for i in rigid if len(items[i]["filenames"]) == 2]
    assert len(three) >= 3 and len(two) >= 13

    identity_rejects: dict[int, str] = {i: "deformable" for i, item in enumerate(items) if item["category"] != "rigid"}
    view_rejects: Counter = Counter()

    def view_defect(index: int, reason: str) -> None:
        view_rejects[reason] += 1
        if len(items[index]["filenames"]) == 2:
            identity_rejects[index] = "too-few-views"

    a1, a2, a3 = three[:3]
    _mask_path(folder, items[a1], 2).unlink()
    view_defect(a1, "mask-missing")
    data = _image_path(folder, items[a2], 0).read_bytes()
    _image_path(folder, items[a2], 0).write_bytes(data[: len(data) // 3])
    view_defect(a2, "image-undecodable")
    opaque = Image.open(_image_path(folder, items[a3], 1)).convert("RGBA")
    opaque.save(_image_path(folder, items[a3], 1))  # fully opaque RGBA: converted, not refused

    b = iter(two)
    victim = next(b)
    Image.new("L", (SIZE + 8, SIZE), 255).save(_mask_path(folder, items[victim], 0))
    view_defect(victim, "mask-size-mismatch")
    victim = next(b)
    Image.new("L", (SIZE, SIZE), 0).save(_mask_path(folder, items[victim], 1))
    view_defect(victim, "mask-empty")
    victim = next(b)
    Image.new("L", (SIZE, SIZE), 255).save(_mask_path(folder, items[victim], 0))
    view_defect(victim, "mask-full")
    victim = next(b)
    Image.open(_image_path(folder, items[victim], 0)).convert("L").save(_image_path(folder, items[victim], 0))
    view_defect(victim, "greyscale-image")
    victim = next(b)
    translucent = Image.open(_image_path(folder, items[victim], 1)).convert("RGBA")
    translucent.putalpha(128)
    translucent.save(_image_path(folder, items[victim], 1))
    view_defect(victim, "transparent-image")
    victim = next(b)
    cmyk_name = items[victim]["filenames"][0].replace(".png", ".jpg")
    Image.open(_image_path(folder, items[victim], 0)).convert("CMYK").save(folder / cmyk_name)
    items[victim]["filenames"][0] = cmyk_name
    view_defect(victim, "cmyk-image")
    victim = next(b)
    items[victim]["filenames"][0] = "../../outside/secret.png"
    identity_rejects[victim] = "unsafe-path"
    victim = next(b)
    items[victim]["category_description"] = ""
    identity_rejects[victim] = "empty-description"
    first, second = next(b), next(b)  # same view count: the lower id keeps the description
    items[second]["category_description"] = items[first]["category_description"].upper() + "."
    identity_rejects[second] = "duplicate-description"
    first, second = next(b), next(b)
    items[second]["objaverse_id"] = items[first]["objaverse_id"]
    identity_rejects[second] = "duplicate-objaverse-id"
    victim = next(b)
    items[victim]["id"] = rigid[0]  # an id already used by an earlier item
    identity_rejects[victim] = "duplicate-id"
    (folder / "metadata.json").write_text(json.dumps(items))
    return folder, {"items": len(items), "identity": identity_rejects, "view": view_rejects}


def test_exact_counts_and_reasons(planted: tuple[Path, dict], tmp_path: Path) -> None:
    folder, expected = planted
    out = str(tmp_path / "out")
    summary = curate_syncd(str(folder), out, SyncdCurationConfig(shard_size=10), progress=False)
    kept = expected["items"] - len(expected["identity"])
    assert summary.identities == kept and summary.rejected == len(expected["identity"])

    rejects = list(TableReader(out, "rejects").iter_rows())
    identity_level = Counter(r["reason"] for r in rejects if r["view"] is None)
    view_level = Counter(r["reason"] for r in rejects if r["view"] is not None)
    assert identity_level == Counter(expected["identity"].values())
    assert view_level == expected["view"]
    assert all(r["detail"] and r["source"].startswith("metadata.json[") for r in rejects)

    report = json.loads((Path(out) / "reports" / "curation.json").read_text())
    assert report["identities_in"] == expected["items"] == report["kept"] + report["rejected_identities"]
    assert report["stages"][0] == {"stage": "metadata items", "remaining": expected["items"]}
    assert report["paper_comparison"]["identities"] == {"ours": kept, "paper": 19386}
    assert "| unique description and Objaverse id |" in (Path(out) / "reports" / "curation.md").read_text()

    rows = list(TableReader(out, "identities").iter_rows())
    n_val, n_test = default_split_sizes(kept)
    assert Counter(r["split"] for r in rows) == {"train": kept - n_val - n_test, "val": n_val, "test": n_test}
    assert len({r["category_description"].lower().rstrip(".") for r in rows}) == kept
    assert len({r["objaverse_id"] for r in rows}) == kept
    for row in rows:
        for k in range(1, row["n_images"] + 1):
            assert row[f"images{k}"].size == (SIZE, SIZE) and row[f"masks{k}"].any()
    assert [p for p in validate(out, progress=False) if p.severity == "error"] == []


def test_two_runs_are_byte_identical(planted: tuple[Path, dict], tmp_path: Path) -> None:
    folder, _ = planted
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    curate_syncd(str(folder), a, SyncdCurationConfig(shard_size=7), progress=False)
    curate_syncd(str(folder), b, SyncdCurationConfig(shard_size=7), workers=2, progress=False)
    assert {p: e.sha256 for p, e in load_manifest(a).shards.items()} == {
        p: e.sha256 for p, e in load_manifest(b).shards.items()
    }
    rerun = curate_syncd(str(folder), a, SyncdCurationConfig(shard_size=7), progress=False)
    assert rerun.shards_written == 0 and rerun.shards_skipped > 0


def test_cleaned_masks_are_stored_binary(planted: tuple[Path, dict], tmp_path: Path) -> None:
    folder, _ = planted
    out = str(tmp_path / "out")
    curate_syncd(str(folder), out, progress=False)
    row = next(TableReader(out, "identities").iter_rows(decode=False))
    mask = np.asarray(Image.open(io.BytesIO(row["masks1"]["bytes"])))
    assert mask.dtype == np.uint8 and set(np.unique(mask).tolist()) == {0, 255}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda items: items[3].pop("filenames"), "item 3: required field 'filenames' is missing"),
        (lambda items: items[2].__setitem__("prompts", "one prompt"), "item 2: field 'prompts' must be list"),
        (lambda items: items[1].__setitem__("category", 7), "item 1: field 'category' must be str"),
        (lambda items: items[0].__setitem__("id", "12"), "item 0: field 'id' must be int"),
        (lambda items: items[4]["prompts"].pop(), "item 4: field 'prompts' has 1 entries for 2 filenames"),
    ],
)
def test_malformed_metadata_stops_the_run(tmp_path: Path, mutate, message: str) -> None:
    folder = tmp_path / "syncd"
    items = write_syncd_folder(folder, ProceduralConfig(identities=6, image_size=SIZE), deformable_every=0)
    for item in items:
        while len(item["filenames"]) > 2:
            item["filenames"].pop()
            item["prompts"].pop()
    mutate(items)
    (folder / "metadata.json").write_text(json.dumps(items))
    with pytest.raises(MetadataError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        curate_syncd(str(folder), str(tmp_path / "out"), progress=False)
    assert "metadata.json" in str(error.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_not_json_and_not_a_list(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "metadata.json").write_text("{broken")
    with pytest.raises(MetadataError, match="metadata.json: not valid JSON"):
        curate_syncd(str(tmp_path), str(tmp_path / "out"), progress=False)
    (tmp_path / "metadata.json").write_text('{"filenames": []}')
    assert main(["curate", "--source", "syncd", "--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "expected a JSON list of items" in capsys.readouterr().err


def test_quality_filters(tmp_path: Path) -> None:
    folder = tmp_path / "syncd"
    write_syncd_folder(folder, ProceduralConfig(identities=12, image_size=SIZE), deformable_every=0, with_scores=True)
    out = str(tmp_path / "out")
    # aesthetics are 5 + position % 3: a threshold of 6 drops every view of positions 0, 3, 6, 9
    summary = curate_syncd(str(folder), out, SyncdCurationConfig(min_aesthetics=6.0, min_dino=0.5), progress=False)
    assert summary.identities == 8
    reasons = Counter(r["reason"] for r in TableReader(out, "rejects").iter_rows())
    assert reasons["too-few-views"] == 4 and reasons["low-aesthetics"] >= 8
    assert all(r["quality"] >= 6.0 for r in TableReader(out, "identities").iter_rows())
    strict = curate_syncd(str(folder), str(tmp_path / "strict"), SyncdCurationConfig(min_dino=0.95), progress=False)
    assert strict.identities == 0  # every pair scores 0.9


def test_cli_syncd(planted: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder, expected = planted
    out = str(tmp_path / "out")
    args = ["curate", "--source", "syncd", "--input", str(folder), "--out", out, "--no-progress", "--workers", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f'"rejected": {len(expected["identity"])}' in printed and "curation.md" in printed
    assert main(["curate", "--source", "syncd", "--out", out]) == 2
    assert "needs --input" in capsys.readouterr().err
