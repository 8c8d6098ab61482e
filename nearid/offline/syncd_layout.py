"""Write procedural identities in the SynCD release layout, for tests, benchmarks and demos.

``DIR/metadata.json`` lists the items (ids are positions, as in SynCD); item i owns ``DIR/i/``:
views ``i/i_k.<ext>`` and JPEG masks ``i/masks/i_k.jpg``. Every ``deformable_every``-th item is a
deformable entry (no Objaverse id, no description), as in the release.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from nearid.common.procedural import ProceduralConfig, plan_identities, render_identity


def write_syncd_folder(
    out_dir: str | Path,
    config: ProceduralConfig,
    deformable_every: int = 5,
    image_format: str = "png",
    with_scores: bool = False,
) -> list[dict]:
    """Render ``config.identities`` items into a SynCD-layout folder; returns the metadata list."""
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for position, plan in enumerate(plan_identities(config)):
        row = render_identity(plan, config)
        deformable = deformable_every > 0 and position % deformable_every == deformable_every - 1
        folder = out / str(position)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        filenames, prompts = [], []
        for k in range(1, plan.n_views + 1):
            name = f"{position}_{k}"
            image = Image.fromarray(row[f"images{k}"], "RGB")
            if image_format == "png":
                image.save(folder / f"{name}.png", compress_level=1)
            else:
                image.save(folder / f"{name}.jpg", quality=95)
            Image.fromarray(row[f"masks{k}"].astype(np.uint8) * 255, "L").save(
                folder / "masks" / f"{name}.jpg", quality=95
            )
            filenames.append(f"{position}/{name}.{image_format}")
            prompts.append(row[f"prompts{k}"])
        item = {
            "filenames": filenames,
            "prompts": prompts,
            "category": "deformable" if deformable else "rigid",
            "objaverse_id": "" if deformable else row["objaverse_id"],
            "category_description": "" if deformable else row["category_description"],
        }
        if with_scores:
            item["aesthetics_scores"] = {Path(f).stem: 5.0 + (position % 3) for f in filenames}
            n = len(filenames)
            item["dino_scores"] = [[0.9 if j > i else 0.0 for j in range(n)] for i in range(n)]
        items.append(item)
    name = "metadata_with_scores.json" if with_scores else "metadata.json"
    (out / name).write_text(json.dumps(items, indent=1))
    return items
