"""Contact sheets: an identity's views, masks and every configuration's distractors, placed where they belong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generators.run import generate_distractors
from nearid.visual import contact_sheet, thumbnail
from nearid.visual.tiles import PAD
from storage import TableReader


LABEL_WIDTH = 110


@pytest.fixture(scope="module")
def sheet_root(tmp_path_factory: pytest.TempPathFactory, procedural_root: str) -> str:
    import shutil

    root = str(tmp_path_factory.mktemp("sheets") / "data")
    shutil.copytree(procedural_root, root)
    generate_distractors(root, ["procedural"], overrides={"resolution": 64}, progress=False)
    generate_distractors(root, ["null"], overrides={"resolution": 64}, splits=["test"], progress=False)
    return root


def _cell(sheet: Image.Image, row: int, column: int, tile: int, row_height: int) -> np.ndarray:
    left, top = LABEL_WIDTH + column * (tile + PAD), PAD + row * row_height
    return np.asarray(sheet.crop((left, top, left + tile, top + tile)))


def test_sheet_places_every_image(sheet_root: str) -> None:
    identities = TableReader(sheet_root, "identities")
    train_id = next(int(i) for i in identities.ids() if identities.get(int(i))["split"] == "train")
    row = identities.get(train_id)
    tile = 64  # the views' own size: placed pixel for pixel
    sheet = contact_sheet(sheet_root, train_id, tile=tile)
    rows = 2 + 2  # views, masks, null (not generated for a train identity), procedural
    assert (sheet.height - PAD) % rows == 0
    row_height = (sheet.height - PAD) // rows
    assert np.array_equal(_cell(sheet, 0, 0, tile, row_height), np.asarray(row["images1"].convert("RGB")))
    mask = _cell(sheet, 1, 0, tile, row_height)[..., 0] > 127
    assert np.array_equal(mask, row["masks1"])
    assert (_cell(sheet, 2, 0, tile, row_height) == (214, 218, 222)).all(axis=2).mean() > 0.9  # null: grey
    distractor = TableReader(sheet_root, "distractors/procedural").get(train_id)["nimg1"]
    assert np.array_equal(_cell(sheet, 3, 0, tile, row_height), np.asarray(thumbnail(distractor, tile)))  # 512 px


def test_show_command(sheet_root: str, tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    run = [sys.executable, "-m", "nearid.cli", "show", sheet_root, "--out", str(out), "--config", "procedural"]
    result = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    first = int(TableReader(sheet_root, "identities").ids()[0])
    assert f"contact sheet of identity {first}" in result.stdout and Image.open(out).size[0] > 3 * 160
    missing = subprocess.run([*run, "--id", "99999"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip().endswith(
        "id 99999 is not in table 'identities' of " + sheet_root
    )
