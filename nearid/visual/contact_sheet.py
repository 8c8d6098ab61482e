"""One identity on one page: its views and masks, and every configuration's distractor for each view.

Each distractor is labelled with its configuration, seed and QC values (how much of the foreground changed, how much
of the background did: 0 when compositing kept it byte for byte), so a reviewer sees at a glance whether a
configuration painted a believable near-identity object into the right background.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from nearid.visual.tiles import Tile, mask_image, tile_grid
from storage import TableReader, distractors_table, load_manifest
from storage.schemas import MAX_VIEWS, distractor_configs


logger = logging.getLogger(__name__)


def _qc(values: Sequence[float | None] | None, view: int) -> str:
    value = values[view] if values and view < len(values) else None
    return "n/a" if value is None else f"{value:.3f}"


def contact_sheet(root: str, identity_id: int, configs: Sequence[str] | None = None, tile: int = 160) -> Image.Image:
    """The sheet of ``identity_id`` in the dataset at ``root`` (every configuration unless ``configs``)."""
    identity = TableReader(root, "identities").get(int(identity_id))
    views = [identity.get(f"images{k}") for k in range(1, MAX_VIEWS + 1)]
    masks = [identity.get(f"masks{k}") for k in range(1, MAX_VIEWS + 1)]
    header = f"id {identity_id}"
    rows = [
        (
            header,
            [Tile(v, (f"view {k + 1}", identity["split"]) if v is not None else ()) for k, v in enumerate(views)],
        ),
        (
            "masks",
            [
                Tile(None if m is None else mask_image(m), () if m is None else (f"object {100 * m.mean():.0f}%",))
                for m in masks
            ],
        ),
    ]
    for config in configs if configs is not None else distractor_configs(load_manifest(root).tables()):
        try:
            row = TableReader(root, distractors_table(config)).get(int(identity_id))
        except KeyError:  # this configuration did not generate this identity (a split it skipped, a reject)
            rows.append((config, [Tile(None, ("not generated",)) for _ in views]))
            continue
        seeds = row.get("seeds") or []
        tiles = []
        for k in range(MAX_VIEWS):
            seed = seeds[k] if k < len(seeds) else None
            caption = (
                f"seed {seed if seed is not None else 'n/a'}",
                f"fg chg {_qc(row.get('qc_fg_change'), k)}",
                f"bg chg {_qc(row.get('qc_bg_change'), k)}",
            )
            image = row.get(f"nimg{k + 1}")
            tiles.append(Tile(image, caption if image is not None else ()))
        rows.append((config, tiles))
    return tile_grid(rows, tile=tile)


def write_contact_sheet(
    root: str, identity_id: int, out: str | Path, configs: Sequence[str] | None = None, tile: int = 160
) -> Path:
    """Render :func:`contact_sheet` into ``out`` (PNG); returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(root, identity_id, configs, tile).save(out)
    logger.info("contact sheet of identity %s: %s", identity_id, out)
    return out
