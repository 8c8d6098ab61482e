"""Train the NearID head: ``accelerate launch -m nearid.training.train --config FILE [--resume latest]``.

Read it top to bottom: configuration, model, data, optimiser and schedule, resume, then the loop
(pixels resized, augmented and normalised on the device, the frozen backbone on valid images only, head, loss,
backward, clip, step), with metrics to JSONL and TensorBoard, periodic validation SSR on the val split and
checkpoints holding the full training state, so ``--resume`` continues exactly where a run stopped. The learning
rate is a pure function of the global step and the global batch is fixed, so 1, 2 or 8 processes train the same
model (``tests/nearid/training/test_train.py`` runs two real processes against one).
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

from nearid.common.progress import progress_bar
from nearid.model.nearid_model import NearIDModel
from nearid.training.augment import apply_augment
from nearid.training.checkpoint import STATE_FILE, load_checkpoint, save_checkpoint
from nearid.training.config import TrainConfig
from nearid.training.data import SLOTS, TupleDataset, collate_tuples
from nearid.training.losses import LossInputs, get_loss
from nearid.training.pixels import PixelSpec, normalise, to_unit
from nearid.training.run_folder import BEST_HEAD_FILE, FINISHED_FILE, HEAD_FILE, check_run_folder, trim_metrics


logger = logging.getLogger("nearid.training.train")


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total_steps``: a pure function of the global step, so the
    schedule is the same for any number of processes (a prepared scheduler would step once per process)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def embed_slots(model: NearIDModel, pixels: torch.Tensor, slot_index: torch.Tensor, batch: int) -> torch.Tensor:
    """Embeddings ``[B, 6, D]`` of the valid images ``pixels`` placed at ``slot_index``; empty slots stay zero."""
    embeddings = model.embed(pixels)
    out = embeddings.new_zeros((batch * SLOTS, embeddings.shape[-1]))
    out[slot_index] = embeddings
    return out.view(batch, SLOTS, -1)


def resolve_precision(config: TrainConfig, cuda: bool) -> tuple[str, str]:
    """``(mixed_precision, backbone_dtype)`` with ``auto`` made concrete: bf16 on CUDA, fp32 elsewhere."""
    mixed = config.run.mixed_precision
    mixed = ("bf16" if cuda else "no") if mixed == "auto" else mixed
    backbone = config.model.backbone_dtype
    backbone = ("bfloat16" if cuda else "float32") if backbone == "auto" else backbone
    return mixed, backbone


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
    from accelerate.utils import parse_flag_from_env, set_seed
    from safetensors.torch import save_file
    from transformers import AutoImageProcessor

    parser = argparse.ArgumentParser(prog="nearid.training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="training YAML")
    parser.add_argument("--resume", default=None, help="a checkpoint folder, or 'latest'")
    args = parser.parse_args(argv)

    # 1. configuration and the accelerator
    config = TrainConfig.from_yaml(args.config)
    out = Path(config.run.out)
    check_run_folder(out, args.resume)  # every process, before any of them writes
    on_cuda = torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_CPU")  # as accelerate decides
    mixed_precision, backbone_dtype = resolve_precision(config, on_cuda)
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
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
    accelerator.wait_for_everyone()
    run_info = {"world_size": world, "device": str(accelerator.device), "mixed_precision": mixed_precision}
    run_info["backbone_dtype"] = backbone_dtype
    previous_resumes = _resumes(out) if args.resume else []  # run.json keeps every resume of the run
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(config.to_yaml())
        (out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
        logger.info(
            "%d process(es) on %s; mixed precision %s, backbone %s",
            world,
            accelerator.device,
            mixed_precision,
            backbone_dtype,
        )

    # 2. model: frozen backbone, trainable copy of its MAP head
    model = NearIDModel.from_pretrained(config.model.backbone, getattr(torch, backbone_dtype), config.model.revision)
    model.backbone.to(accelerator.device)
    if accelerator.is_main_process:
        print(f"trainable parameters: {model.trainable_parameters():,} (head); backbone frozen", flush=True)
    processor = AutoImageProcessor.from_pretrained(config.model.backbone, revision=config.model.revision)
    pixel_spec = PixelSpec.from_processor(processor)  # the evaluation recipe, applied on the device

    # 3. data: workers decode and draw augmentations; pixels travel as uint8
    dataset = TupleDataset(config.data, seed=config.run.seed)
    per_device = config.optim.global_batch // world
    if len(dataset) < config.optim.global_batch:
        raise ValueError(f"{len(dataset)} training tuples cannot fill one global batch of {config.optim.global_batch}")
    workers = config.data.num_workers
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=per_device,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        collate_fn=collate_tuples,
        pin_memory=accelerator.device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=config.data.prefetch_factor if workers > 0 else None,
        generator=torch.Generator().manual_seed(config.run.seed),
    )

    # 4. optimiser, schedule (set by hand from the global step), loss
    steps_per_epoch = len(dataset) // config.optim.global_batch
    total_steps = config.optim.max_steps or steps_per_epoch * config.optim.epochs
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    head, optimizer, loader = accelerator.prepare(model.head, optimizer, loader)
    model.head = head
    loss_fn = get_loss(config.loss.name, **config.loss.params)

    # 5. resume: head, optimiser, RNGs and our step counters
    step, best = 0, -1.0
    if args.resume:
        complete = [c for c in _checkpoints(out) if (c / STATE_FILE).is_file()]
        checkpoint = (
            (complete[-1] if complete else out / "checkpoints") if args.resume == "latest" else Path(args.resume)
        )
        counters = load_checkpoint(
            checkpoint, accelerator.unwrap_model(model.head), optimizer, accelerator.process_index
        )
        step, best = counters["step"], counters["best_val_ssr"]
        written_by = counters.get("world_size", world)
        if written_by != world:
            logger.warning(
                "resuming a checkpoint written by %d process(es) with %d: the global batch, data order and LR "
                "schedule are the same, but per-process RNG streams differ, so the run is not bit-identical",
                written_by,
                world,
            )
        logger.info("resumed from %s at step %d", checkpoint, step)
        if accelerator.is_main_process:
            trim_metrics(out / "metrics.jsonl", step)
            run_info["resumed"] = [*previous_resumes, {"checkpoint": str(checkpoint), "step": step}]
            (out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
    if accelerator.is_main_process:
        accelerator.init_trackers("nearid", config={"loss": config.loss.name, "lr": config.optim.lr})
    metrics_file = out / "metrics.jsonl"

    def checkpoint() -> None:
        folder = out / "checkpoints" / f"step-{step:07d}"
        save_checkpoint(
            folder,
            accelerator.unwrap_model(model.head),
            optimizer,
            {"step": step, "best_val_ssr": best, "world_size": world},
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
    bar = progress_bar(
        total=total_steps, initial=step, desc="train", unit="step", enabled=accelerator.is_local_main_process
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
            pixels = to_unit(batch["images"], pixel_spec, accelerator.device)
            pixels = normalise(apply_augment(pixels, batch["augment"]), pixel_spec)
            with accelerator.autocast():
                embeddings = embed_slots(model, pixels, batch["slot_index"], len(batch["kind"]))
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
            lr = config.optim.lr * lr_factor(step, config.optim.warmup_steps, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window_images += len(batch["images"]) * world
            bar.update(1)

            if step % config.run.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start
                mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()  # the global loss
                log(
                    {
                        "loss": mean_loss,
                        "lr": lr,
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
        (out / FINISHED_FILE).write_text(json.dumps({"steps": step, "best_val_ssr": best}, indent=2))
        print(f"finished {step} steps; head: {out / HEAD_FILE}; best val SSR: {best:.2f}", flush=True)
    accelerator.end_training()
    return 0


def _resumes(out: Path) -> list[dict]:
    """The resumes an earlier start of this run recorded in ``run.json``."""
    path = out / "run.json"
    return list(json.loads(path.read_text()).get("resumed", [])) if path.is_file() else []


def _head_state(accelerator, model: NearIDModel) -> dict[str, torch.Tensor]:
    head = accelerator.unwrap_model(model.head)
    return {k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()}


if __name__ == "__main__":
    sys.exit(main())
