"""The bad-input corpus, import-hf: each case runs the real entry point and asserts its exact
outcome (the reject code of a row or view, or the exit status and message of a refused run)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from nearid.cli import main
from storage import TableReader
from storage.codecs import encode_mask, encode_png
from tests.bad_input.helpers import SIZE, errors_of, huge_png_header


# -- import-hf: official-layout rows with every kind of defect, one import ------------------------------------


def _png(array: np.ndarray) -> dict:
    return {"bytes": encode_png(array), "path": None}


def _mask_cell(mask: np.ndarray) -> dict:
    return {"bytes": encode_mask(mask), "path": None}


IMPORT_CASES = {
    "null id": ("bad-id", None),
    "negative id": ("bad-id", None),
    "duplicate id": ("duplicate-id", None),
    "split banana": ("bad-split", None),
    "NaN quality": ("bad-number", None),
    "garbage view bytes": ("too-few-views", "image-undecodable"),
    "mask of another size": ("too-few-views", "mask-size-mismatch"),
    "empty mask": ("too-few-views", "mask-empty"),
    "translucent view": ("too-few-views", "transparent-image"),
    "greyscale view": ("too-few-views", "greyscale-image"),
    "missing mask": ("too-few-views", "mask-missing"),
    "13000x13000 PNG header": ("too-few-views", "image-too-large"),
    "one view only": ("too-few-views", None),
}


@pytest.fixture(scope="module")
def import_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import datasets

    base = tmp_path_factory.mktemp("import")
    rng = np.random.default_rng(0)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[16:48, 16:48] = True

    def good(identity: int) -> dict:
        row = {"id": identity, "split": "train", "quality": 0.5, "category": "rigid"}
        row["category_description"] = f"object {identity}"
        row["objaverse_id"] = f"obj{identity}"
        for k in (1, 2, 3):
            row[f"images{k}"] = _png(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)) if k < 3 else None
            row[f"masks{k}"] = _mask_cell(mask) if k < 3 else None
            row[f"prompts{k}"] = f"view {k}" if k < 3 else None
        row["n_images"] = 2
        return row

    rows = [good(i) for i in range(100, 106)]
    positions = {}
    for number, name in enumerate(IMPORT_CASES):
        row = good(200 + number)
        if name == "null id":
            row["id"] = None
        elif name == "negative id":
            row["id"] = -3
        elif name == "duplicate id":
            row["id"] = 100
        elif name == "split banana":
            row["split"] = "banana"
        elif name == "NaN quality":
            row["quality"] = math.nan
        elif name == "garbage view bytes":
            row["images1"] = {"bytes": b"garbage", "path": None}
        elif name == "mask of another size":
            row["masks2"] = _mask_cell(np.ones((SIZE + 4, SIZE), bool))
        elif name == "empty mask":
            row["masks1"] = _mask_cell(np.zeros((SIZE, SIZE), bool))
        elif name == "translucent view":
            rgba = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).convert("RGBA")
            rgba.putalpha(90)
            buffer = __import__("io").BytesIO()
            rgba.save(buffer, "PNG")
            row["images2"] = {"bytes": buffer.getvalue(), "path": None}
        elif name == "greyscale view":
            buffer = __import__("io").BytesIO()
            Image.new("L", (SIZE, SIZE), 128).save(buffer, "PNG")
            row["images1"] = {"bytes": buffer.getvalue(), "path": None}
        elif name == "missing mask":
            row["masks1"] = None
        elif name == "13000x13000 PNG header":
            row["images2"] = {"bytes": huge_png_header(), "path": None}
        elif name == "one view only":
            row["images2"] = row["masks2"] = None
        positions[name] = len(rows)
        rows.append(row)
    features = datasets.Features(
        {
            "id": datasets.Value("int64"),
            "split": datasets.Value("string"),
            "quality": datasets.Value("float64"),
            "category": datasets.Value("string"),
            "category_description": datasets.Value("string"),
            "objaverse_id": datasets.Value("string"),
            "n_images": datasets.Value("int64"),
            **{f"images{k}": datasets.Image() for k in (1, 2, 3)},
            **{f"masks{k}": datasets.Image() for k in (1, 2, 3)},
            **{f"prompts{k}": datasets.Value("string") for k in (1, 2, 3)},
        }
    )
    # the hub's file layout: data/train-XXXXX-of-XXXXX.parquet, as a snapshot of the dataset repo has it
    (base / "NearID" / "data").mkdir(parents=True)
    dataset = datasets.Dataset.from_list(rows, features=features)
    half = len(rows) // 2
    for k, part in enumerate((range(half), range(half, len(rows)))):
        dataset.select(part).to_parquet(str(base / "NearID" / "data" / f"train-{k:05d}-of-00002.parquet"))
    out = str(base / "root")
    code = main(["import-hf", str(base / "NearID"), "--out", out])
    by_position: dict[int, list[dict]] = {}
    for reject in TableReader(out, "rejects").iter_rows():
        position = int(reject["source"].rsplit("[", 1)[1].rstrip("]"))
        by_position.setdefault(position, []).append(reject)
    return {"code": code, "out": out, "rows": len(rows), "positions": positions, "by_position": by_position}


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_import_row(case: str, import_run: dict) -> None:
    assert import_run["code"] == 0
    rejects = import_run["by_position"].get(import_run["positions"][case], [])
    identity, view = IMPORT_CASES[case]
    assert [r["reason"] for r in rejects if r["view"] is None] == [identity], rejects
    assert [r["reason"] for r in rejects if r["view"] is not None] == ([view] if view else [])


def test_import_counts_reconcile_and_the_root_is_valid(import_run: dict) -> None:
    out = import_run["out"]
    kept = len(TableReader(out, "identities"))
    refused = sum(1 for rows in import_run["by_position"].values() if any(r["view"] is None for r in rows))
    assert kept + refused == import_run["rows"] and kept == 6
    assert errors_of(out) == []
