"""Official rows with a missing first or middle view: every imported view keeps the distractor painted in its own
background, whatever the renumbering."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from storage import TableReader
from storage.codecs import encode_png
from storage.official_import import import_official
from tests.storage.test_official import build_official


def _rewrite(folder: Path, change) -> None:
    """Load an official dataset with raw image bytes, let ``change(rows)`` edit it, save it back in place."""
    import datasets

    ds = datasets.load_from_disk(str(folder))
    images = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
    for column in images:
        ds = ds.cast_column(column, datasets.Image(decode=False))
    rows = ds.to_dict()
    change(rows)
    edited = datasets.Dataset.from_dict(rows)
    for column in images:
        edited = edited.cast_column(column, datasets.Image())
    tmp = folder.with_name(folder.name + ".new")
    edited.save_to_disk(str(tmp))
    del ds
    shutil.rmtree(folder)
    tmp.rename(folder)


def test_gap_rows_keep_every_view_distractor_pair(tmp_path: Path) -> None:
    official = tmp_path / "official"
    positives = build_official(official, n=9)
    three = [r for r, n in enumerate(positives["n_images"]) if n == 3][:2]
    assert len(three) == 2, "the fixture needs two 3-view identities"
    first_gap, middle_gap = three

    def drop_views(rows: dict) -> None:
        for row, slot in ((first_gap, 1), (middle_gap, 2)):
            rows[f"img{slot}"][row] = rows[f"masks{slot}"][row] = None

    def tag_distractors(rows: dict) -> None:  # nimg k of row r is a flat colour that names (r, k)
        for k in (1, 2, 3):
            rows[f"nimg{k}"] = [
                {"bytes": encode_png(np.full((40, 40, 3), (r, 20 * k, 7), np.uint8)), "path": None}
                for r in range(len(rows["id"]))
            ]

    _rewrite(official / "NearID", drop_views)
    _rewrite(official / "NearID-Flux", tag_distractors)
    root = str(tmp_path / "root")
    import_official(official / "NearID", root, {"flux-fill-512": official / "NearID-Flux"}, official / "splits")

    identities, distractors = TableReader(root, "identities"), TableReader(root, "distractors/flux-fill-512")
    for row, kept in ((first_gap, (2, 3)), (middle_gap, (1, 3))):
        identity = positives["id"][row]
        imported = identities.get(identity, decode=False)
        assert imported["n_images"] == 2 and imported["images3"] is None
        for new_slot, slot in enumerate(kept, start=1):
            assert imported[f"images{new_slot}"]["bytes"] == positives[f"img{slot}"][row]["bytes"]
            colour = np.asarray(distractors.get(identity)[f"nimg{new_slot}"])[0, 0]
            assert tuple(colour) == (row, 20 * slot, 7), f"view {new_slot} of row {row} got another background"
        assert distractors.get(identity)["nimg3"] is None
