"""Looking at the data: thumbnails, labelled tile grids and an identity's contact sheet (views, masks and every
configuration's distractors), for ``nearid show`` and the report's galleries."""

from nearid.visual.contact_sheet import contact_sheet, write_contact_sheet
from nearid.visual.tiles import Tile, jpeg_bytes, mask_image, thumbnail, tile_grid


__all__ = ["Tile", "contact_sheet", "jpeg_bytes", "mask_image", "thumbnail", "tile_grid", "write_contact_sheet"]
