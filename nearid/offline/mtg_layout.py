"""Write procedural MTG-layout datasets: two views of an identity, each with one part of the object
recoloured (the "glitch"), plus object and part masks. For tests, the demo and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nearid.common.procedural import ProceduralConfig, plan_identities, render_identity
from storage.codecs import encode_mask, encode_png


def _part_edit(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Recolour one side of the object (a part), severity drawn between 10 % and 60 % of the object."""
    ys, xs = np.nonzero(mask)
    fraction = rng.uniform(0.1, 0.6)
    axis = xs if rng.random() < 0.5 else ys
    cut = np.quantile(axis, fraction)
    part = np.zeros_like(mask)
    selected = axis <= cut
    part[ys[selected], xs[selected]] = True
    edited = image.copy()
    shift = rng.integers(60, 160, size=3)
    edited[part] = ((edited[part].astype(np.int16) + shift) % 256).astype(np.uint8)
    return edited, part


def write_procedural_mtg(out_dir: str | Path, config: ProceduralConfig, splits: dict[str, int] | None = None) -> None:
    """Save a DatasetDict in the MTG layout with ``splits`` sizes (default ``{"test": identities}``)."""
    import datasets

    splits = splits or {"test": config.identities}
    if sum(splits.values()) > config.identities:
        raise ValueError(f"splits need {sum(splits.values())} identities, config has {config.identities}")
    plans = plan_identities(config)
    rng = np.random.default_rng(config.seed + 1)
    image = datasets.Image()
    features = datasets.Features(
        {
            "id": datasets.Value("int64"),
            "category": datasets.Value("string"),
            **{
                f"image_{v}_{kind}": image
                for v in (1, 2)
                for kind in ("original", "inpainted", "object_mask", "part_mask")
            },
        }
    )
    out, start = {}, 0
    for split, count in splits.items():
        rows = {name: [] for name in features}
        for plan in plans[start : start + count]:
            row = render_identity(plan, config)
            rows["id"].append(plan.id)
            rows["category"].append(plan.spec.shape)
            for v in (1, 2):
                edited, part = _part_edit(row[f"images{v}"], row[f"masks{v}"], rng)
                rows[f"image_{v}_original"].append({"bytes": encode_png(row[f"images{v}"]), "path": None})
                rows[f"image_{v}_inpainted"].append({"bytes": encode_png(edited), "path": None})
                rows[f"image_{v}_object_mask"].append({"bytes": encode_mask(row[f"masks{v}"]), "path": None})
                rows[f"image_{v}_part_mask"].append({"bytes": encode_mask(part), "path": None})
        out[split] = datasets.Dataset.from_dict(rows, features=features)
        start += count
    datasets.DatasetDict(out).save_to_disk(str(out_dir))
