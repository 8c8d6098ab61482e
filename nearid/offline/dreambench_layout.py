"""Write a small synthetic dataset in the DreamBench++ layouts (samples, human ratings, a metric), for tests,
the demo and benchmarks.

Each generated image is its reference blended towards noise by an amount set by a hidden fidelity 0-4, which is
also group 1's rating; group 2 disagrees by one point now and then. The layout quirks are reproduced: one object
is ``rubik's_cube`` in sample folders and metric files but ``magic_cube`` in human files, one subject has a hyphen
in its name, metric keys carry the image index ``_0`` and the two IP-Adapter runs use the long folder spellings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from storage.dreambench import CATEGORIES, METHODS, human_rating_path, write_ratings


RUN_FOLDERS = {
    "textual_inversion_sd": "textual_inversion_sd_gs7.5",
    "dreambooth_sd": "dreambooth_sd_gs7.5",
    "dreambooth_lora_sdxl": "dreambooth_lora_sdxl_gs7.5",
    "blip_diffusion": "blip_diffusion_gs7.5",
    "emu2": "emu2_gs3",
    "ip_adapter_plus_vit_h_sdxl": "ip_adapter_plus_vit_huge_sdxl_s0.6",
    "ip_adapter_vit_g_sdxl": "ip_adapter_vit_giant_sdxl_s0.6",
}
SUBJECTS = {
    "object": ["rubik's_cube", "backpack", "teapot"],
    "live_subject_animal": ["cotton-top_tamarin", "kitten", "heron"],
    "live_subject_human": ["girl", "chef", "pilot"],
    "style": ["ukiyo-e", "mosaic", "sketch"],
}


@dataclass(frozen=True)
class SyntheticDreamBench:
    """Where the synthetic layout was written."""

    samples: Path
    ratings: Path
    metric: Path


def _reference(rng: np.random.Generator, size: int) -> np.ndarray:
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        x1, y1 = x0 + int(rng.integers(size // 4, size // 2)), y0 + int(rng.integers(size // 4, size // 2))
        draw.ellipse((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(image)


def write_synthetic_dreambench(
    out_dir: str | Path, subjects: int = 2, prompts: int = 3, size: int = 64, seed: int = 0
) -> SyntheticDreamBench:
    """Write ``out/samples``, ``out/ratings/data_human_rating/...`` and ``out/ratings/data_oracle_rating`` (a
    metric equal to the hidden fidelity, so its M-H is high) for ``subjects`` per category and ``prompts`` each."""
    if not 1 <= subjects <= min(len(names) for names in SUBJECTS.values()):
        raise ValueError(f"subjects must be in [1, {min(len(n) for n in SUBJECTS.values())}], got {subjects}")
    if not 2 <= prompts <= 9:
        raise ValueError(f"prompts must be in [2, 9] (DreamBench++ has 9 per subject), got {prompts}")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    collections = [
        (f"{category}_{n:02d}_{name}", f"{category}_{n:02d}_{name}".replace("rubik's_cube", "magic_cube"))
        for category in CATEGORIES
        for n, name in enumerate(SUBJECTS[category][:subjects])
    ]
    references = {folder: _reference(rng, size) for folder, _ in collections}
    metric_dir = out / "ratings" / "data_oracle_rating"
    for m, method in enumerate(METHODS):
        run = out / "samples" / RUN_FOLDERS[method]
        human: tuple[dict[str, int], dict[str, int]] = ({}, {})
        metric: dict[str, float] = {}
        for c, (folder, human_id) in enumerate(collections):
            for prompt in range(prompts):
                fidelity = (prompt + c + m + int(rng.integers(0, 2))) % 5
                noise = rng.integers(0, 256, (size, size, 3)).astype(np.float64)
                weight = 1.0 - fidelity / 4.0
                generated = ((1.0 - weight) * references[folder] + weight * noise).astype(np.uint8)
                for kind, pixels in (("src_image", references[folder]), ("tgt_image", generated)):
                    path = run / kind / folder / f"{prompt}_0.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).save(path)
                human[0][f"{human_id}-{prompt}"] = fidelity
                human[1][f"{human_id}-{prompt}"] = int(np.clip(fidelity + rng.choice([-1, 0, 0, 1]), 0, 4))
                metric[f"{folder}-{prompt}_0"] = 25.0 * fidelity + float(rng.uniform(0.0, 1.0))
        for group, ratings in enumerate(human, start=1):
            write_ratings(human_rating_path(out / "ratings", group, method), ratings)
        write_ratings(metric_dir / f"{method}.json", metric)
    return SyntheticDreamBench(samples=out / "samples", ratings=out / "ratings", metric=metric_dir)
