"""The generation data path against the tiny pipelines, measured in one run.

The data path is everything around the model: decode the identity shard, clean and resize the mask,
resize the view, composite, Lanczos down to 512, QC, PNG-encode, write Parquet. The ``null``
generator runs exactly that with no model. Prints its images/s on one process (about one core: the
path is single-threaded PIL/OpenCV/numpy), then for each tiny pipeline the share of its total time
that the data path accounts for, at the same working size.
Run: python benchmarks/generation.py [--identities 24] [--working 128] [--steps 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path


# run as a script, this file's folder comes first on sys.path and could shadow the packages
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from generators.run import generate_distractors  # noqa: E402
from nearid.common.logs import setup_logging  # noqa: E402
from nearid.common.procedural import ProceduralConfig  # noqa: E402
from nearid.curation.procedural import curate_procedural  # noqa: E402
from nearid.offline.tiny_models import build_tiny_models  # noqa: E402


def run(root: str, config: str, overrides: dict, model_dir: str | None) -> tuple[int, float]:
    start = time.perf_counter()
    (summary,) = generate_distractors(
        root, [config], overrides=overrides, model_dir=model_dir, force=True, progress=False
    )
    return summary.images_written, time.perf_counter() - start


def main() -> None:
    setup_logging(-1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=24)
    parser.add_argument("--working", type=int, default=128, help="working size of the tiny pipelines")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps of the tiny pipelines")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nearid-generation-bench-"))
    root = str(work / "data")
    curate_procedural(
        root, ProceduralConfig(identities=args.identities, image_size=512), shard_size=64, progress=False
    )
    models = str(work / "tiny")
    build_tiny_models(models)

    images, seconds = run(root, "null", {"resolution": 512, "composite": True}, None)
    per_image_512 = seconds / images
    print(
        f"data path alone (null generator, 512px views, working 512): {images / seconds:.1f} images/s on one process"
    )
    null_images, null_seconds = run(root, "null", {"resolution": args.working, "composite": True}, None)
    null_per_image = null_seconds / null_images
    print(f"data path alone at working {args.working}px: {null_images / null_seconds:.1f} images/s")
    print(f"\n{'config':16s} {'images':>6s} {'s/image':>8s} {'data-path share':>16s}")
    for config in ("procedural", "flux-fill-512", "flux-canny-512", "sdxl-512", "qwen-512", "powerpaint"):
        overrides = {"resolution": args.working} | ({} if config == "procedural" else {"steps": args.steps})
        images, seconds = run(root, config, overrides, models)
        per_image = seconds / images
        print(f"{config:16s} {images:6d} {per_image:8.3f} {null_per_image / per_image:15.1%}")
    print(f"\n512px data path: {per_image_512 * 1000:.0f} ms per image per core")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
