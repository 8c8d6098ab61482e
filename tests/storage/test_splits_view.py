"""``load_splits``: the README's way into the data with ``datasets`` returns real splits, never test rows in train."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from generators.run import generate_distractors
from storage import TableReader, load_splits


README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, procedural_root: str) -> str:
    copy = str(tmp_path_factory.mktemp("splits") / "data")
    shutil.copytree(procedural_root, copy)
    generate_distractors(copy, ["procedural"], overrides={"resolution": 64}, progress=False)
    return copy


def test_splits_hold_only_their_rows(root: str) -> None:
    reader = TableReader(root, "identities")
    expected: dict[str, set[int]] = {}
    for row in reader.iter_rows(columns=["id", "split"]):
        expected.setdefault(row["split"], set()).add(row["id"])
    identities = load_splits(root)
    assert set(identities) == set(expected) and "test" in identities
    for split, rows in identities.items():
        assert set(rows["split"]) == {split} and set(rows["id"]) == expected[split]
    distractors = load_splits(root, "distractors/procedural")
    for split, rows in distractors.items():
        assert set(rows["id"]) == expected[split]
    assert identities["train"][0]["images1"].size == (64, 64)  # decoded images, as datasets users expect


def test_readme_snippet_runs(root: str) -> None:
    block = re.search(r"```python\n(from storage import TableReader, load_splits.*?)```", README.read_text(), re.S)
    assert block, "README lost its data snippet"
    scope: dict = {}
    exec(block.group(1).replace("runs/demo/data", root), scope)  # the snippet exactly as documented
    assert set(scope["train"]["split"]) == {"train"} and len(scope["test"]) > 0
