"""Tiny weights in the Hugging Face cache exactly as ``snapshot_download`` leaves a repository, awkward names and all.

Tests point ``HF_HUB_CACHE`` here with ``HF_HUB_OFFLINE=1`` and take the real hub code path (``snapshot_download``,
``from_pretrained`` on a hub id) without a network. :func:`write_powerpaint_repo` writes ``JunhaoZhuang/PowerPaint_v2``
as the hub holds it today: the branch text encoder only as ``PowerPaint_Brushnet/pytorch_model.bin`` (a pickle, as
published; only ``nearid convert-weights`` ever reads it) and the base UNet as ``unet/diffusion_pytorch_model-002``
(``.bin`` and ``.safetensors``).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from generators.powerpaint.checkpoint import BRUSHNET_FOLDER, BRUSHNET_WEIGHTS
from generators.registry import POWERPAINT, POWERPAINT_BASE
from nearid.offline.tiny_powerpaint import BASE_FOLDER, CHECKPOINT_FOLDER, TEXT_ENCODER_WEIGHTS


UNET_HUB_NAME = "diffusion_pytorch_model-002"


def repo_folder(cache_dir: str | Path, repo_id: str) -> Path:
    """``models--<org>--<name>`` in the cache."""
    return Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"


def write_snapshot(cache_dir: str | Path, repo_id: str, source: Path) -> Path:
    """Copy ``source`` as a snapshot of ``repo_id`` whose commit hashes its contents; ``refs/main`` points at it."""
    digest = hashlib.sha1()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        digest.update(path.relative_to(source).as_posix().encode() + path.read_bytes())
    commit = digest.hexdigest()
    repo = repo_folder(cache_dir, repo_id)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def write_powerpaint_repo(tiny_models_dir: str | Path, cache_dir: str | Path, staging: str | Path) -> Path:
    """The tiny PowerPaint checkpoint and base in the hub's layout, cached; returns the snapshot folder."""
    tiny, stage = Path(tiny_models_dir), Path(staging)
    brushnet = stage / BRUSHNET_FOLDER
    brushnet.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tiny / CHECKPOINT_FOLDER / BRUSHNET_FOLDER / BRUSHNET_WEIGHTS, brushnet / BRUSHNET_WEIGHTS)
    text_state = load_file(str(tiny / CHECKPOINT_FOLDER / BRUSHNET_FOLDER / TEXT_ENCODER_WEIGHTS))
    torch.save(text_state, brushnet / "pytorch_model.bin")  # as published: no safetensors copy
    base = stage / (POWERPAINT_BASE.subfolder or "")
    shutil.copytree(tiny / BASE_FOLDER, base, dirs_exist_ok=True)
    unet = base / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(unet)), unet.with_name(f"{UNET_HUB_NAME}.bin"))
    unet.rename(unet.with_name(f"{UNET_HUB_NAME}.safetensors"))
    return write_snapshot(cache_dir, POWERPAINT.hub_id, stage)
