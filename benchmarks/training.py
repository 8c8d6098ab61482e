"""Training input path and step cost, measured in one run.

1. Data path, one process and one thread: a worker's cost per valid image (PNG decode, role-aware masking,
   augmentation draws) at 512 px stored views, against the previous path on the same images (PIL decode + the
   SigLIP image processor to 384 px in the worker); bytes shipped per image (uint8 at the stored size) against
   the old all-slots fp32 tensor; and the device-side resize + augment + normalise per image on this CPU.
2. Training steps: images/s of full steps (device pixels, frozen backbone, head, NearID loss, backward, AdamW),
   full step / frozen backbone forward on the same batch, data-loader wait share, and backbone images per step
   (valid slots only) against the all-slots count. ``--size base`` uses a random ViT-B/16-sized SigLIP tower at
   224 px, closer to real training than the tiny test model. GPU numbers need a GPU host
   (``benchmarks/gpu_training.py``).
Run: python benchmarks/training.py [--size tiny|base] [--steps 6] [--batch 16] [--workers 2]
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from generators.run import generate_distractors  # noqa: E402
from nearid.common.logs import setup_logging  # noqa: E402
from nearid.common.procedural import ProceduralConfig  # noqa: E402
from nearid.curation.procedural import curate_procedural  # noqa: E402
from nearid.model.nearid_model import NearIDModel  # noqa: E402
from nearid.offline.tiny_encoders import save_siglip_tower  # noqa: E402
from nearid.training.augment import apply_augment  # noqa: E402
from nearid.training.config import DataConfig  # noqa: E402
from nearid.training.data import SLOTS, TupleDataset, collate_tuples  # noqa: E402
from nearid.training.losses import LossInputs, nearid_loss  # noqa: E402
from nearid.training.pixels import PixelSpec, normalise, to_unit  # noqa: E402
from nearid.training.train import embed_slots  # noqa: E402
from storage.codecs import decode_rgb  # noqa: E402


def make_dataset(folder: Path, identities: int, image_size: int) -> str:
    root = str(folder / "data")
    config = ProceduralConfig(identities=identities, image_size=image_size)
    curate_procedural(root, config, shard_size=128, progress=False)
    generate_distractors(root, ["procedural"], overrides={"resolution": image_size}, progress=False)
    return root


def data_path(work: Path, tuples: int) -> None:
    """Section 1, on 512 px views and a 384 px target."""
    from transformers import SiglipImageProcessorPil

    from storage import TableReader

    torch.set_num_threads(1)
    root = make_dataset(work / "d512", tuples + 16, 512)
    dataset = TupleDataset(DataConfig(root=root, sources=("procedural",), cache_dir=str(work / "cache512")))
    dataset[0]  # warm the Arrow cache
    start, images = time.perf_counter(), 0
    items = []
    for index in range(tuples):
        items.append(dataset[index])
        images += len(items[-1]["images"])
    worker = (time.perf_counter() - start) / images

    processor = SiglipImageProcessorPil(size={"height": 384, "width": 384}, resample=3)
    reader = TableReader(root, "identities")
    blobs = [r[f"images{k}"]["bytes"] for r in reader.iter_rows(decode=False) for k in (1, 2, 3) if r[f"images{k}"]]
    blobs = blobs[:images]
    start = time.perf_counter()
    for blob in blobs:
        processor(images=[decode_rgb(blob)], return_tensors="pt")
    previous = (time.perf_counter() - start) / len(blobs)

    spec = PixelSpec.from_processor(processor)
    batch = collate_tuples(items[:8])
    start = time.perf_counter()
    normalise(apply_augment(to_unit(batch["images"], spec, "cpu"), batch["augment"]), spec)
    device = (time.perf_counter() - start) / len(batch["images"])
    shipped = np.mean([image.numel() for image in batch["images"]])
    old_bytes = SLOTS * 3 * 384 * 384 * 4 / (len(batch["images"]) / 8)  # all 6 slots in fp32, per valid image
    print(f"data path, 512 px views -> 384 px, one process, one thread ({images} images in {tuples} tuples):")
    print(f"  worker (decode, masking, augmentation draws): {1 / worker:7.1f} images/s/core")
    print(f"  previous worker path (PIL decode + processor): {1 / previous:7.1f} images/s/core")
    print(f"  new / previous throughput:                     {previous / worker:7.2f}x")
    print(
        f"  bytes shipped per valid image: {shipped / 1e6:.2f} MB uint8 vs {old_bytes / 1e6:.2f} MB before "
        "(fp32, all slots)"
    )
    print(f"  device resize + augment + normalise on this CPU: {device * 1000:.1f} ms/image (a GPU does it in bulk)")


def training_steps(args: argparse.Namespace, work: Path) -> None:
    """Section 2: full steps against the backbone alone, on 256 px views."""
    from transformers import AutoImageProcessor

    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = make_dataset(work / "d256", args.batch * (args.steps + 2) + 40, 256)
    backbone = save_siglip_tower(work / "backbone", args.size)
    spec = PixelSpec.from_processor(AutoImageProcessor.from_pretrained(backbone))
    model = NearIDModel.from_pretrained(backbone)
    dataset = TupleDataset(
        DataConfig(root=root, sources=("procedural",), num_workers=args.workers, cache_dir=str(work / "cache"))
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        collate_fn=collate_tuples,
        persistent_workers=args.workers > 0,
    )
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-4, weight_decay=1e-4)

    step_times, wait_times, forward_times, images = [], [], [], 0
    batches = iter(loader)
    for step in range(args.steps + 1):  # the first step warms up and is not counted
        start = time.perf_counter()
        batch = next(batches)
        fetched = time.perf_counter()
        pixels = normalise(apply_augment(to_unit(batch["images"], spec, "cpu"), batch["augment"]), spec)
        embeddings = embed_slots(model, pixels, batch["slot_index"], args.batch)
        loss = nearid_loss(
            LossInputs(
                embeddings[:, 0],
                embeddings[:, 1:3],
                batch["positive_mask"],
                embeddings[:, 3:6],
                batch["distractor_mask"],
            )
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.head.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = time.perf_counter()
        forward_start = time.perf_counter()
        model.features(pixels)  # the same images through the frozen backbone alone
        forward_end = time.perf_counter()
        if step:
            step_times.append(done - start)
            wait_times.append(fetched - start)
            forward_times.append(forward_end - forward_start)
            images += len(batch["images"])
    total = sum(step_times)
    print(
        f"\ntraining steps, backbone {args.size}: {sum(p.numel() for p in model.backbone.parameters()) / 1e6:.1f}M "
        f"frozen, head {model.trainable_parameters() / 1e6:.2f}M trainable; batch {args.batch} tuples, "
        f"{args.steps} steps"
    )
    print(f"  images/s (full training steps):                  {images / total:.1f}")
    print(f"  full step / frozen backbone forward, same batch: {total / sum(forward_times):.2f}")
    print(f"  data-loader wait share of step time:             {sum(wait_times) / total:.1%}")
    per_step = images / args.steps
    print(
        f"  backbone images per step: {per_step:.1f} valid of {SLOTS * args.batch} slots "
        f"({per_step / SLOTS / args.batch:.0%})"
    )


def main() -> None:
    setup_logging(-1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16, help="tuples per step (6 image slots each)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-tuples", type=int, default=48, help="tuples timed in the data-path section")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nearid-training-bench-"))
    try:
        data_path(work, args.data_tuples)
        training_steps(args, work)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
