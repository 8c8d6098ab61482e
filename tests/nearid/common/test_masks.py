"""Mask cleaning: the official recipe (largest part, filled) and the region a generator repaints."""

from __future__ import annotations

import numpy as np

from nearid.common.masks import clean_mask, inpaint_region


def test_inpaint_region_keeps_holes_and_every_significant_part() -> None:
    yy, xx = np.mgrid[:96, :96]
    radius = np.hypot(yy - 40, xx - 40)
    ring = (radius < 28) & (radius > 14)
    part = (np.abs(yy - 82) < 8) & (np.abs(xx - 82) < 8)  # 225 px: about 15 % of the ring
    speck = (np.abs(yy - 10) < 2) & (np.abs(xx - 88) < 2)  # 9 px of noise
    region = inpaint_region(ring | part | speck)
    assert region[40, 40] == 0 and region[40, 40 + 21] and region[82, 82]  # hole open, ring and part kept
    assert not region[10, 88]  # the speck is gone
    filled = clean_mask(ring | part | speck)  # the official recipe: largest part, filled
    assert filled[40, 40] and not filled[82, 82]
