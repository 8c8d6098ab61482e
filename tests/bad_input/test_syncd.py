"""The bad-input corpus, SynCD curation: each case runs the real entry point and asserts its exact
outcome (the reject code of a row or view, or the exit status and message of a refused run)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from PIL import Image

from nearid.cli import main
from nearid.common.procedural import ProceduralConfig
from nearid.offline.syncd_layout import write_syncd_folder
from storage import TableReader
from tests.bad_input.helpers import SIZE, errors_of, huge_png_header


# -- SynCD curation: one folder, one planted defect per item, one run --------------------------------------------

SYNCD_CASES: dict[str, str] = {}
"""case name -> the identity-level reject reason its item must get (the run itself must succeed)."""


def _image(folder: Path, item: dict, view: int) -> Path:
    return folder / item["filenames"][view]


def _mask(folder: Path, item: dict, view: int) -> Path:
    image = _image(folder, item, view)
    return image.parent / "masks" / f"{image.stem}.jpg"


def plant(folder: Path, items: list[dict], item: dict, name: str) -> None:
    """Apply case ``name`` to ``item`` (a two-view rigid item): metadata or files."""
    outside = folder.parent / f"outside-{name}"
    if name == "id beyond int64":
        item["id"] = 2**63
    elif name == "negative id":
        item["id"] = -7
    elif name == "lone surrogate in a prompt":
        item["prompts"][0] = "a red \ud800 cup"
    elif name == "lone surrogate in the description":
        item["category_description"] = "a \udfff mug"
    elif name == "NUL in the description":
        item["category_description"] = "a mug\x00"
    elif name == "NUL in a file name":
        item["filenames"][1] = item["filenames"][1].replace(".png", "\x00.png")
    elif name == "file name with ..":
        item["filenames"][0] = "../../etc/passwd"
    elif name == "absolute file name":
        item["filenames"][0] = "/etc/hostname"
    elif name == "masks folder is a symlink outside":
        masks = _mask(folder, item, 0).parent
        outside.mkdir()
        for mask in masks.iterdir():
            mask.rename(outside / mask.name)
        masks.rmdir()
        masks.symlink_to(outside, target_is_directory=True)
    elif name == "image is a symlink outside":
        outside.mkdir()
        target = outside / "view.png"
        _image(folder, item, 0).rename(target)
        _image(folder, item, 0).symlink_to(target)
    elif name == "NaN aesthetics score":
        item["aesthetics_scores"][Path(item["filenames"][0]).stem] = math.nan
    elif name == "infinite aesthetics score":
        item["aesthetics_scores"][Path(item["filenames"][1]).stem] = math.inf
    elif name == "13000x13000 PNG header":
        _image(folder, item, 0).write_bytes(huge_png_header())
    elif name == "huge mask header":
        _mask(folder, item, 1).write_bytes(huge_png_header(9000, 9000))
    elif name == "truncated view":
        data = _image(folder, item, 0).read_bytes()
        _image(folder, item, 0).write_bytes(data[: len(data) // 3])
    elif name == "garbage view bytes":
        _image(folder, item, 1).write_bytes(b"not an image at all")
    elif name == "empty view file":
        _image(folder, item, 0).write_bytes(b"")
    elif name == "mask of another size":
        Image.new("L", (SIZE, SIZE + 8), 255).save(_mask(folder, item, 0))
    elif name == "empty mask":
        Image.new("L", (SIZE, SIZE), 0).save(_mask(folder, item, 1))
    elif name == "full mask":
        Image.new("L", (SIZE, SIZE), 255).save(_mask(folder, item, 0))
    elif name == "garbage mask bytes":
        _mask(folder, item, 0).write_bytes(b"\xff\xd8 broken jpeg")
    elif name == "translucent view":
        image = Image.open(_image(folder, item, 1)).convert("RGBA")
        image.putalpha(100)
        image.save(_image(folder, item, 1))
    elif name == "greyscale view":
        Image.open(_image(folder, item, 0)).convert("L").save(_image(folder, item, 0))
    elif name == "missing view file":
        _image(folder, item, 1).unlink()
    elif name == "missing mask file":
        _mask(folder, item, 0).unlink()
    elif name == "empty Objaverse id":
        item["objaverse_id"] = " "
    elif name == "empty description":
        item["category_description"] = ""
    elif name == "deformable category":
        item["category"] = "deformable"
    elif name == "id already used":
        item["id"] = 0  # the first item's position
    else:
        raise AssertionError(f"no planting for {name}")


for _name, _reason in [
    ("id beyond int64", "bad-id"),
    ("negative id", "bad-id"),
    ("lone surrogate in a prompt", "bad-text"),
    ("lone surrogate in the description", "bad-text"),
    ("NUL in the description", "bad-text"),
    ("NUL in a file name", "bad-text"),
    ("file name with ..", "unsafe-path"),
    ("absolute file name", "unsafe-path"),
    ("masks folder is a symlink outside", "unsafe-path"),
    ("image is a symlink outside", "unsafe-path"),
    ("NaN aesthetics score", "too-few-views"),
    ("infinite aesthetics score", "too-few-views"),
    ("13000x13000 PNG header", "too-few-views"),
    ("huge mask header", "too-few-views"),
    ("truncated view", "too-few-views"),
    ("garbage view bytes", "too-few-views"),
    ("empty view file", "too-few-views"),
    ("mask of another size", "too-few-views"),
    ("empty mask", "too-few-views"),
    ("full mask", "too-few-views"),
    ("garbage mask bytes", "too-few-views"),
    ("translucent view", "too-few-views"),
    ("greyscale view", "too-few-views"),
    ("missing view file", "too-few-views"),
    ("missing mask file", "too-few-views"),
    ("empty Objaverse id", "empty-objaverse-id"),
    ("empty description", "empty-description"),
    ("deformable category", "deformable"),
    ("id already used", "duplicate-id"),
]:
    SYNCD_CASES[_name] = _reason

SYNCD_VIEW_REASONS = {
    "NaN aesthetics score": "bad-number",
    "infinite aesthetics score": "bad-number",
    "13000x13000 PNG header": "image-too-large",
    "huge mask header": "mask-too-large",
    "truncated view": "image-undecodable",
    "garbage view bytes": "image-undecodable",
    "empty view file": "image-undecodable",
    "mask of another size": "mask-size-mismatch",
    "empty mask": "mask-empty",
    "full mask": "mask-full",
    "garbage mask bytes": "mask-undecodable",
    "translucent view": "transparent-image",
    "greyscale view": "greyscale-image",
    "missing view file": "image-missing",
    "missing mask file": "mask-missing",
}


@pytest.fixture(scope="module")
def syncd_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("corpus") / "syncd"
    n = len(SYNCD_CASES) + 12
    config = ProceduralConfig(identities=n * 2, image_size=SIZE, seed=21)
    items = write_syncd_folder(folder, config, deformable_every=0, with_scores=True)
    two_views = [i for i, item in enumerate(items) if len(item["filenames"]) == 2 and i > 0]
    assert len(two_views) >= len(SYNCD_CASES)
    positions = dict(zip(SYNCD_CASES, two_views, strict=False))
    for name, position in positions.items():
        plant(folder, items, items[position], name)
    (folder / "metadata_with_scores.json").write_text(json.dumps(items))
    out = str(folder.parent / "out")
    code = main(
        ["curate", "--source", "syncd", "--input", str(folder), "--out", out, "--min-aesthetics", "1", "--no-progress"]
    )
    rejects = list(TableReader(out, "rejects").iter_rows())
    by_position: dict[int, list[dict]] = {}
    for reject in rejects:
        position = int(reject["source"].split("[", 1)[1].split("]", 1)[0])
        by_position.setdefault(position, []).append(reject)
    return {"code": code, "out": out, "items": items, "positions": positions, "by_position": by_position}


@pytest.mark.parametrize("case", list(SYNCD_CASES))
def test_syncd_item(case: str, syncd_run: dict) -> None:
    assert syncd_run["code"] == 0
    rejects = syncd_run["by_position"].get(syncd_run["positions"][case], [])
    identity = [r["reason"] for r in rejects if r["view"] is None]
    assert identity == [SYNCD_CASES[case]], rejects
    if case in SYNCD_VIEW_REASONS:
        assert [r["reason"] for r in rejects if r["view"] is not None] == [SYNCD_VIEW_REASONS[case]]
    assert all(r["detail"] for r in rejects)


def test_syncd_counts_reconcile_and_the_root_is_valid(syncd_run: dict) -> None:
    report = json.loads((Path(syncd_run["out"]) / "reports" / "curation.json").read_text())
    assert report["identities_in"] == len(syncd_run["items"]) == report["kept"] + report["rejected_identities"]
    assert report["rejected_identities"] == len(SYNCD_CASES)
    assert len(TableReader(syncd_run["out"], "identities")) == report["kept"]
    assert errors_of(syncd_run["out"]) == []


# -- SynCD: inputs that stop the run with one clear line -------------------------------------------------------


def syncd_folder(tmp_path: Path, metadata: str | None = None) -> Path:
    folder = tmp_path / "syncd"
    write_syncd_folder(folder, ProceduralConfig(identities=4, image_size=SIZE, seed=2))
    if metadata is not None:
        (folder / "metadata.json").write_text(metadata)
    return folder


@pytest.mark.parametrize(
    ("metadata", "flags", "message"),
    [
        ("{not json", [], "not valid JSON"),
        ("[" * 100000 + "]" * 100000, [], "nested too deeply"),
        ('{"items": []}', [], "expected a JSON list of items"),
        ('[{"prompts": ["a"], "category": "rigid"}]', [], "required field 'filenames' is missing"),
        ('[{"filenames": [1], "prompts": ["a"], "category": "rigid"}]', [], "'filenames'\\[0\\] must be str"),
        (None, ["--min-aesthetics", "nan"], "min_aesthetics must be a finite number"),
        (None, ["--min-aesthetics", "inf"], "min_aesthetics must be a finite number"),
        (None, ["--min-dino", "nan"], "min_dino must be a finite number"),
    ],
)
def test_syncd_run_refused(
    metadata: str | None, flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = syncd_folder(tmp_path, metadata)
    out = str(tmp_path / "out")
    assert main(["curate", "--source", "syncd", "--input", str(folder), "--out", out, *flags, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (Path(out) / "manifest.json").exists() or errors_of(out) == []
