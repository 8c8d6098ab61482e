"""The generation data path against the tiny pipelines, batching, and a shard's memory, measured in one run.

The data path is everything around the model: decode the identity shard, clean and resize the mask,
resize the view, composite, Lanczos down to 512, QC, PNG-encode, write Parquet. The ``null``
generator runs exactly that with no model. Prints its images/s on one process (about one core: the
path is single-threaded PIL/OpenCV/numpy), then for each tiny pipeline the share of its total time
that the data path accounts for, at the same working size; each family's speed-up from batches of 4 over
single images; and the peak RSS of a process generating one shard of 64 and one of 256 identities (a streamed
shard keeps about the same peak however large it is).
Run: python benchmarks/generation.py [--identities 24] [--working 128] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
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


SHARD_RSS_CHILD = """
import json, resource, sys
from generators.run import generate_distractors
generate_distractors(sys.argv[1], ["null"], overrides={"resolution": 512}, force=True, progress=False)
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def shard_peak_rss(work: Path, identities: int) -> float:
    """Peak RSS (MB) of a fresh process generating one shard of ``identities`` 512 px identities."""
    root = str(work / f"rss-{identities}")
    config = ProceduralConfig(identities=identities, image_size=512, seed=2)
    curate_procedural(root, config, shard_size=identities, n_val=1, n_test=1, progress=False)
    out = subprocess.run([sys.executable, "-c", SHARD_RSS_CHILD, root], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def powerpaint_step_cost(models: str, side: int = 320) -> tuple[float, float]:
    """(our trunk walk, our BrushNet branch) per denoising step, each over a plain diffusers UNet forward of the
    same base UNet on the same CFG batch: what a PowerPaint step costs beyond the SD1.5 UNet it is built on."""
    import torch
    from diffusers import UNet2DConditionModel

    from generators.powerpaint.pipeline import load_powerpaint
    from generators.powerpaint.trunk import unet_forward_with_brushnet

    pipe = load_powerpaint(Path(models) / "powerpaint", Path(models) / "powerpaint-base")
    unet: UNet2DConditionModel = pipe.unet
    latents, t = torch.randn(2, 4, side // 8, side // 8), torch.tensor(500)
    text, cond = torch.randn(2, 77, unet.config.cross_attention_dim), torch.randn(2, 5, side // 8, side // 8)

    def timed(fn) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(3):
            fn()
        return (time.perf_counter() - start) / 3

    with torch.no_grad():
        plain = timed(lambda: unet(latents, t, text))
        residuals = pipe.brushnet(latents, t, encoder_hidden_states=text, brushnet_cond=cond, conditioning_scale=1.0)
        trunk = timed(lambda: unet_forward_with_brushnet(unet, latents, t, text, *residuals))
        branch = timed(
            lambda: pipe.brushnet(latents, t, encoder_hidden_states=text, brushnet_cond=cond, conditioning_scale=1.0)
        )
    return trunk / plain, branch / plain


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

    print(f"\n{'config':16s} {'batch 4 / single':>16s}  (images/s ratio, working {args.working}px)")
    for config in ("flux-fill-512", "flux-canny-512", "sdxl-512", "qwen-512", "powerpaint"):
        rates = []
        for batch in (1, 4):
            overrides = {"resolution": args.working, "steps": args.steps, "batch_size": batch}
            images, seconds = run(root, config, overrides, models)
            rates.append(images / seconds)
        print(f"{config:16s} {rates[1] / rates[0]:15.2f}x")

    trunk, branch = powerpaint_step_cost(models)
    print(
        f"\nPowerPaint step vs a diffusers UNet forward of its base: trunk {trunk:.2f}x, branch {branch:.2f}x "
        f"(a step is both: ~{trunk + branch:.1f} UNet forwards)"
    )

    small, large = shard_peak_rss(work, 64), shard_peak_rss(work, 256)
    print(f"\npeak RSS generating one shard: 64 identities {small:.0f} MB, 256 identities {large:.0f} MB")
    print(f"(4x the identities: {large / small:.2f}x the peak)")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
