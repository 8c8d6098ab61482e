"""Training step cost against the frozen backbone alone, measured in one run on the same batches.

Prints images/s of full training steps (data, frozen backbone, head, NearID loss, backward, AdamW),
the ratio of a full step to the backbone forward alone on the same batch (the overhead of data, head,
loss and optimiser), and data-loader wait as a share of step time. ``--size base`` builds a random
ViT-B/16-sized SigLIP vision tower at 224px, whose backbone cost resembles real training better
than the tiny test model. CPU only here; GPU numbers need a GPU host.
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

import torch  # noqa: E402

from generators.run import generate_distractors  # noqa: E402
from nearid.common.logs import setup_logging  # noqa: E402
from nearid.common.procedural import ProceduralConfig  # noqa: E402
from nearid.curation.procedural import curate_procedural  # noqa: E402
from nearid.model.nearid_model import NearIDModel  # noqa: E402
from nearid.training.config import DataConfig  # noqa: E402
from nearid.training.data import TupleDataset  # noqa: E402
from nearid.training.losses import nearid_loss  # noqa: E402
from nearid.training.train import embed_tuples  # noqa: E402


def build_backbone(size: str, folder: Path) -> str:
    from transformers import SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel

    if size == "tiny":
        from nearid.offline.tiny_encoders import tiny_siglip

        model, processor = tiny_siglip()
    else:
        config = SiglipVisionConfig(
            image_size=224,
            patch_size=16,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
        )
        model = SiglipVisionModel(config).eval()
        processor = SiglipImageProcessorPil(size={"height": 224, "width": 224})
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def main() -> None:
    setup_logging(-1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16, help="tuples per step (6 image slots each)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from transformers import AutoImageProcessor

    work = Path(tempfile.mkdtemp(prefix="nearid-training-bench-"))
    root = str(work / "data")
    n = args.batch * (args.steps + 2) + 40
    curate_procedural(root, ProceduralConfig(identities=n, image_size=256), shard_size=128, progress=False)
    generate_distractors(root, ["procedural"], overrides={"resolution": 256}, progress=False)
    backbone = build_backbone(args.size, work / "backbone")
    processor = AutoImageProcessor.from_pretrained(backbone)
    model = NearIDModel.from_pretrained(backbone)
    dataset = TupleDataset(
        DataConfig(root=root, sources=("procedural",), num_workers=args.workers, cache_dir=str(work / "cache")),
        processor,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.workers
    )
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-4, weight_decay=1e-4)

    step_times, wait_times, forward_times, images = [], [], [], 0
    batches = iter(loader)
    for step in range(args.steps + 1):  # the first step warms up and is not counted
        start = time.perf_counter()
        batch = next(batches)
        fetched = time.perf_counter()
        valid = torch.cat([batch["anchor_valid"][:, None], batch["positive_mask"], batch["distractor_mask"]], 1)
        embeddings = embed_tuples(model, batch["pixel_values"], valid)
        loss = nearid_loss(
            embeddings[:, 0], embeddings[:, 1:3], batch["positive_mask"], embeddings[:, 3:6], batch["distractor_mask"]
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.head.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = time.perf_counter()
        flat = batch["pixel_values"].flatten(0, 1)[valid.flatten()]
        forward_start = time.perf_counter()
        model.features(flat)  # the same images through the frozen backbone alone
        forward_end = time.perf_counter()
        if step:
            step_times.append(done - start)
            wait_times.append(fetched - start)
            forward_times.append(forward_end - forward_start)
            images += int(valid.sum())
    total = sum(step_times)
    print(
        f"backbone {args.size}: {sum(p.numel() for p in model.backbone.parameters()) / 1e6:.1f}M frozen, "
        f"head {model.trainable_parameters() / 1e6:.2f}M trainable; batch {args.batch} tuples, {args.steps} steps"
    )
    print(f"images/s (full training steps):                 {images / total:.1f}")
    print(f"full step / frozen backbone forward, same batch: {total / sum(forward_times):.2f}")
    print(f"data-loader wait share of step time:             {sum(wait_times) / total:.1%}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
