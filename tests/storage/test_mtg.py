from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nearid.common.procedural import ProceduralConfig
from nearid.offline.mtg_layout import write_procedural_mtg
from storage.mtg import MTGLayoutError, open_mtg, read_mtg


def test_read_procedural_mtg(tmp_path: Path) -> None:
    write_procedural_mtg(tmp_path / "mtg", ProceduralConfig(identities=7, image_size=48), {"train": 4, "test": 3})
    assert len(open_mtg(tmp_path / "mtg", "train")) == 4
    samples = list(read_mtg(tmp_path / "mtg", "test"))
    assert len(samples) == 3
    for s in samples:
        for v in (0, 1):
            obj, part = s.object_mask[v], s.part_mask[v]
            assert obj.any() and part.any() and not (part & ~obj).any()  # the edited part lies in the object
            changed = np.any(np.asarray(s.original[v]) != np.asarray(s.inpainted[v]), axis=-1)
            assert changed[part].mean() > 0.9 and not changed[~part].any()
    with pytest.raises(MTGLayoutError, match="choose one"):
        next(read_mtg(tmp_path / "mtg"))
    with pytest.raises(MTGLayoutError, match="no split 'val'"):
        next(read_mtg(tmp_path / "mtg", "val"))


def test_not_an_mtg_dataset(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"image_1_original": [None]}).save_to_disk(str(tmp_path / "x"))
    with pytest.raises(MTGLayoutError, match="missing columns"):
        next(read_mtg(tmp_path / "x"))
