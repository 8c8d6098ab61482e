"""The training stage at real size on one GPU, in one run of at most ~8 minutes (for a session lent an H200).

A random-weight SigLIP2 so400m/14 at 384 px (the real architecture; weights do not change the timings) in bf16:
backbone forward images/s, then full training steps at global batch 128 fed from Parquet through the real loader
(``TupleDataset`` + ``collate_tuples`` with workers, pinned memory, the device pixel path, autocast, the NearID
loss, AdamW). Prints one JSON line per figure: s/step, backbone images per step (valid slots only), MFU of the
backbone against ``--peak-tflops`` (790, H200 bf16 dense), data-loader wait share, and the workers' images/s.
Goals: <= 0.85 s/step and loader wait <= 5 %.

``--smoke`` runs the same code with the tiny test model on a small dataset on the CPU, to check the script
before spending GPU time: python benchmarks/gpu_training.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from generators.run import generate_distractors  # noqa: E402
from nearid.common.logs import setup_logging  # noqa: E402
from nearid.common.procedural import ProceduralConfig  # noqa: E402
from nearid.curation.procedural import curate_procedural  # noqa: E402
from nearid.model.nearid_model import NearIDModel  # noqa: E402
from nearid.offline.tiny_encoders import save_siglip_tower  # noqa: E402
from nearid.training.augment import apply_augment  # noqa: E402
from nearid.training.config import DataConfig  # noqa: E402
from nearid.training.data import TupleDataset, collate_tuples  # noqa: E402
from nearid.training.losses import LossInputs, nearid_loss  # noqa: E402
from nearid.training.pixels import PixelSpec, normalise, to_unit  # noqa: E402
from nearid.training.train import embed_slots, lr_factor  # noqa: E402


def report(name: str, value: float, unit: str, **extra: object) -> None:
    print(json.dumps({"figure": name, "value": round(value, 4), "unit": unit, **extra}), flush=True)


def backbone_flops_per_image(config) -> float:
    """Forward FLOPs of a ViT tower per image: patch embedding, attention projections, scores, MLP, MAP head."""
    tokens = (config.image_size // config.patch_size) ** 2
    d, inner = config.hidden_size, config.intermediate_size
    per_layer = 2 * tokens * (4 * d * d + 2 * d * inner) + 4 * tokens * tokens * d
    patch = 2 * tokens * 3 * config.patch_size**2 * d
    return config.num_hidden_layers * per_layer + patch


def main() -> None:
    setup_logging(-1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, small data, CPU: check the script")
    parser.add_argument("--identities", type=int, default=240, help="procedural identities at 512 px")
    parser.add_argument("--batch", type=int, default=128, help="tuples per step (global batch, one GPU)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=min(14, os.cpu_count() or 1))
    parser.add_argument("--peak-tflops", type=float, default=790.0)
    args = parser.parse_args()
    if args.smoke:
        args.identities, args.batch, args.steps, args.workers = 40, 8, 3, 0
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    work = Path(tempfile.mkdtemp(prefix="nearid-gpu-training-"))
    try:
        # 1. the backbone alone
        start = time.perf_counter()
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        folder = save_siglip_tower(work / "backbone", "tiny" if args.smoke else "so400m", str(device), dtype)
        model = NearIDModel.from_pretrained(folder, dtype)
        model.backbone.to(device)
        model.head.to(device)
        from transformers import AutoImageProcessor

        spec = PixelSpec.from_processor(AutoImageProcessor.from_pretrained(folder))
        report("build backbone", time.perf_counter() - start, "s", device=str(device))
        flops = backbone_flops_per_image(model.backbone.config)
        pixels = torch.randn(64 if not args.smoke else 8, 3, spec.height, spec.width, device=device)

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()

        for _ in range(2):
            model.features(pixels)
        sync()
        start = time.perf_counter()
        repeats = 5
        for _ in range(repeats):
            model.features(pixels)
        sync()
        forward = repeats * len(pixels) / (time.perf_counter() - start)
        report("backbone forward", forward, "images/s", mfu=round(forward * flops / args.peak_tflops / 1e12, 3))

        # 2. data: procedural identities at 512 px with their distractors, through the real loader
        start = time.perf_counter()
        root = str(work / "data")
        size = 512 if not args.smoke else 64
        workers = max(1, args.workers)
        curate_procedural(root, ProceduralConfig(identities=args.identities, image_size=size), workers=workers)
        generate_distractors(root, ["procedural"], overrides={"resolution": size}, progress=False)
        report("build dataset", time.perf_counter() - start, "s", identities=args.identities)
        dataset = TupleDataset(DataConfig(root=root, sources=("procedural",), cache_dir=str(work / "cache")))
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=args.batch,
            shuffle=True,
            drop_last=True,
            num_workers=args.workers,
            collate_fn=collate_tuples,
            pin_memory=device.type == "cuda",
            persistent_workers=args.workers > 0,
            prefetch_factor=4 if args.workers > 0 else None,
        )
        if len(loader) < 1:
            raise SystemExit(f"{len(dataset)} tuples cannot fill a batch of {args.batch}: raise --identities")

        # 3. full training steps (the loop of nearid.training.train, on one device)
        optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-4, weight_decay=1e-4)
        steps, waits, images = [], [], []
        batches = iter(loader)
        for step in range(args.steps + 2):  # two warm-up steps are not counted
            fetch = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            begin = time.perf_counter()
            unit = to_unit(batch["images"], spec, device)
            x = normalise(apply_augment(unit, batch["augment"].to(device, non_blocking=True)), spec)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                embeddings = embed_slots(model, x, batch["slot_index"].to(device), len(batch["kind"]))
            inputs = LossInputs(
                embeddings[:, 0],
                embeddings[:, 1:3],
                batch["positive_mask"].to(device),
                embeddings[:, 3:6],
                batch["distractor_mask"].to(device),
            )
            loss = nearid_loss(inputs, gather=False)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.head.parameters(), 1.0)
            for group in optimizer.param_groups:
                group["lr"] = 1e-4 * lr_factor(step, 2, args.steps + 2)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync()
            end = time.perf_counter()
            if step >= 2:
                steps.append(end - fetch)
                waits.append(begin - fetch)
                images.append(len(batch["images"]))
        seconds = sum(steps) / len(steps)
        per_step = sum(images) / len(images)
        report("training step", seconds, "s/step", batch=args.batch, goal=0.85)
        report("backbone images per step", per_step, "images", all_slots=6 * args.batch)
        report("training MFU (backbone forward)", per_step * flops / seconds / args.peak_tflops / 1e12, "fraction")
        report("data-loader wait share", sum(waits) / sum(steps), "fraction", goal=0.05)
        report("images into the GPU", per_step / seconds, "images/s", workers=args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
