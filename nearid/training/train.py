"""Train the NearID head: ``accelerate launch -m nearid.training.train --config FILE [--resume latest]``.

Read it top to bottom: configuration, model, data, optimiser and schedule, resume, then the loop
(forward the frozen backbone on valid images only, head, loss, backward, clip, step), with metrics
to JSONL and TensorBoard, periodic validation SSR on the val split and checkpoints holding the full
``accelerate`` state, so ``--resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from nearid.model.nearid_model import NearIDModel
from nearid.training.checkpoint import STATE_FILE, load_checkpoint, save_checkpoint
from nearid.training.config import TrainConfig


logger = logging.getLogger("nearid.training.train")

HEAD_FILE = "head.safetensors"
BEST_HEAD_FILE = "best_head.safetensors"


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total_steps`` (a pure function of the step)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def embed_tuples(model: NearIDModel, pixel_values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Embeddings ``[B, 6, D]``; the backbone only sees valid slots (invalid ones stay zero)."""
    batch, slots = valid.shape
    flat = pixel_values.flatten(0, 1)[valid.flatten()]
    embeddings = model.embed(flat)
    out = embeddings.new_zeros((batch * slots, embeddings.shape[-1]))
    out[valid.flatten()] = embeddings
    return out.view(batch, slots, -1)


@dataclass(frozen=True)
class ValidationSet:
    """The val identities' views and their distractors from one source, decoded once per run."""

    images: list
    slots: list[tuple[int, int, str]]  # (identity index, view slot, "view" | "distractor") per image
    identities: int


def load_validation_set(root: str, source: str) -> ValidationSet | None:
    """Views of the ``val`` split and their distractors in ``source``; only val rows are decoded."""
    from storage import TableReader

    reader = TableReader(root, "identities")
    rows = [reader.decode_row(r) for r in reader.iter_rows(decode=False) if r["split"] == "val"]
    if not rows:
        return None
    distractors = TableReader(root, f"distractors/{source}")
    present = set(distractors.ids().tolist())
    images, slots = [], []
    for n, row in enumerate(rows):
        distractor_row = distractors.get(row["id"]) if row["id"] in present else {}
        for k in range(3):
            for kind, image in (("view", row[f"images{k + 1}"]), ("distractor", distractor_row.get(f"nimg{k + 1}"))):
                if image is not None:
                    images.append(image)
                    slots.append((n, k, kind))
    return ValidationSet(images, slots, len(rows))


@torch.no_grad()
def validate_ssr(model: NearIDModel, val: ValidationSet, processor, batch_size: int = 64) -> dict[str, float]:
    """SSR / PA of the current model on the validation set (full images)."""
    from nearid.evaluation.metrics import discrimination

    device = next(model.head.parameters()).device
    embeddings = []
    for start in range(0, len(val.images), batch_size):
        pixels = processor(images=val.images[start : start + batch_size], return_tensors="pt")["pixel_values"]
        embeddings.append(model.embed(pixels.to(device)).float().cpu())
    vectors = torch.cat(embeddings).numpy()
    n, dim = val.identities, vectors.shape[1]
    views, dists = np.zeros((n, 3, dim)), np.zeros((n, 3, dim))
    view_valid, dist_valid = np.zeros((n, 3), bool), np.zeros((n, 3), bool)
    for (i, k, kind), vector in zip(val.slots, vectors, strict=True):
        (views if kind == "view" else dists)[i, k] = vector
        (view_valid if kind == "view" else dist_valid)[i, k] = True
    result = discrimination(
        np.einsum("nid,njd->nij", views, views), np.einsum("nid,nid->ni", views, dists), view_valid, dist_valid
    )
    return {"val_ssr": result.ssr, "val_pa": result.pa, "val_samples": result.n_samples}


def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("step-*"))


def main(argv: Sequence[str] | None = None) -> int:
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import set_seed
    from safetensors.torch import save_file
    from transformers import AutoImageProcessor

    from nearid.training.data import TupleDataset
    from nearid.training.losses import LossInputs, get_loss

    parser = argparse.ArgumentParser(prog="nearid.training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="training YAML")
    parser.add_argument("--resume", default=None, help="a checkpoint folder, or 'latest'")
    args = parser.parse_args(argv)

    # 1. configuration and the accelerator
    config = TrainConfig.from_yaml(args.config)
    out = Path(config.run.out)
    accelerator = Accelerator(
        mixed_precision=config.run.mixed_precision,
        log_with="tensorboard",
        project_dir=str(out),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    set_seed(config.run.seed)
    world = accelerator.num_processes
    if config.optim.global_batch % world:
        raise ValueError(f"global_batch {config.optim.global_batch} is not divisible by {world} processes")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(config.to_yaml())

    # 2. model: frozen backbone, trainable copy of its MAP head
    dtype_name = config.model.backbone_dtype
    if dtype_name == "auto":
        dtype_name = "bfloat16" if accelerator.device.type == "cuda" else "float32"
    model = NearIDModel.from_pretrained(config.model.backbone, getattr(torch, dtype_name), config.model.revision)
    model.backbone.to(accelerator.device)
    if accelerator.is_main_process:
        print(f"trainable parameters: {model.trainable_parameters():,} (head); backbone frozen", flush=True)
    processor = AutoImageProcessor.from_pretrained(config.model.backbone, revision=config.model.revision)

    # 3. data
    dataset = TupleDataset(config.data, processor, seed=config.run.seed)
    per_device = config.optim.global_batch // world
    if len(dataset) < config.optim.global_batch:
        raise ValueError(f"{len(dataset)} training tuples cannot fill one global batch of {config.optim.global_batch}")
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=per_device,
        shuffle=True,
        drop_last=True,
        num_workers=config.data.num_workers,
        generator=torch.Generator().manual_seed(config.run.seed),
    )

    # 4. optimiser, schedule, loss
    steps_per_epoch = len(dataset) // config.optim.global_batch
    total_steps = config.optim.max_steps or steps_per_epoch * config.optim.epochs
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.optim.warmup_steps, total_steps)
    )
    head, optimizer, loader, scheduler = accelerator.prepare(model.head, optimizer, loader, scheduler)
    model.head = head
    loss_fn = get_loss(config.loss.name, **config.loss.params)

    # 5. resume: the accelerate state (head, optimiser, schedule, RNGs) and our step counters
    step, best = 0, -1.0
    if args.resume:
        complete = [c for c in _checkpoints(out) if (c / STATE_FILE).is_file()]
        checkpoint = (
            (complete[-1] if complete else out / "checkpoints") if args.resume == "latest" else Path(args.resume)
        )
        counters = load_checkpoint(
            checkpoint, accelerator.unwrap_model(model.head), optimizer, scheduler, accelerator.process_index
        )
        step, best = counters["step"], counters["best_val_ssr"]
        logger.info("resumed from %s at step %d", checkpoint, step)
    if accelerator.is_main_process:
        accelerator.init_trackers("nearid", config={"loss": config.loss.name, "lr": config.optim.lr})
    metrics_file = out / "metrics.jsonl"

    def checkpoint() -> None:
        folder = out / "checkpoints" / f"step-{step:07d}"
        save_checkpoint(
            folder,
            accelerator.unwrap_model(model.head),
            optimizer,
            scheduler,
            {"step": step, "best_val_ssr": best},
            accelerator.process_index,
            accelerator.is_main_process,
        )
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for old in _checkpoints(out)[: -config.run.keep_checkpoints]:
                shutil.rmtree(old)

    def log(values: dict) -> None:
        if accelerator.is_main_process:
            accelerator.log(values, step=step)
            with metrics_file.open("a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")

    # 6. the loop
    val_source = config.run.val_source or config.data.sources[0]
    val_set = load_validation_set(config.data.root, val_source) if accelerator.is_main_process else None
    bar = tqdm(
        total=total_steps, initial=step, desc="train", unit="step", disable=not accelerator.is_local_main_process
    )
    window_start, data_wait, window_images = time.perf_counter(), 0.0, 0
    while step < total_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        dataset.set_epoch(epoch)
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        fetch_start = time.perf_counter()
        for batch in batches:
            data_wait += time.perf_counter() - fetch_start
            valid = torch.cat([batch["anchor_valid"][:, None], batch["positive_mask"], batch["distractor_mask"]], 1)
            with accelerator.autocast():
                embeddings = embed_tuples(model, batch["pixel_values"], valid)
            loss = loss_fn(
                LossInputs(
                    anchor=embeddings[:, 0],
                    positives=embeddings[:, 1:3],
                    positive_mask=batch["positive_mask"] & batch["anchor_valid"][:, None],
                    distractors=embeddings[:, 3:6],
                    distractor_mask=batch["distractor_mask"] & batch["anchor_valid"][:, None],
                    margins=batch["margins"],
                )
            )
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(model.head.parameters(), config.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window_images += int(valid.sum()) * world
            bar.update(1)

            if step % config.run.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start
                mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()  # the global loss
                log(
                    {
                        "loss": mean_loss,
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm),
                        "epoch": epoch,
                        "images_per_s": window_images / elapsed,
                        "data_wait_share": data_wait / elapsed,
                    }
                )
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                window_start, data_wait, window_images = time.perf_counter(), 0.0, 0
            if step % config.run.eval_every == 0 or step == total_steps:
                if accelerator.is_main_process:  # the unwrapped head: a DDP forward on one rank would hang
                    plain = NearIDModel(model.backbone, accelerator.unwrap_model(model.head))
                    plain.head.eval()
                    values = validate_ssr(plain, val_set, processor) if val_set else {}
                    plain.head.train()
                    if values:
                        log(values)
                        if values["val_ssr"] > best:
                            best = values["val_ssr"]
                            save_file(_head_state(accelerator, model), str(out / BEST_HEAD_FILE))
                accelerator.wait_for_everyone()
            if step % config.run.checkpoint_every == 0 and step < total_steps:
                checkpoint()
            if step >= total_steps:
                break
            fetch_start = time.perf_counter()

    # 7. the end: last checkpoint, final head, summary
    checkpoint()
    if accelerator.is_main_process:
        save_file(_head_state(accelerator, model), str(out / HEAD_FILE))
        (out / "final.json").write_text(json.dumps({"steps": step, "best_val_ssr": best}, indent=2))
        print(f"finished {step} steps; head: {out / HEAD_FILE}; best val SSR: {best:.2f}", flush=True)
    accelerator.end_training()
    return 0


def _head_state(accelerator, model: NearIDModel) -> dict[str, torch.Tensor]:
    head = accelerator.unwrap_model(model.head)
    return {k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()}


if __name__ == "__main__":
    sys.exit(main())
