"""``nearid convert-weights``: the one place a pickle is ever read, once, by the user's explicit command.

Some published checkpoints ship a file only as a pickle (PowerPaint v2's text encoder is
``PowerPaint_Brushnet/pytorch_model.bin``). Loading a pickle can run code, so generation never does: this command
reads each pickled state dict with ``torch.load(weights_only=True)`` (tensors and plain containers only, no code)
and writes the safetensors file the loaders look for beside it, under the name the libraries expect:
``pytorch_model*.bin`` -> ``model*.safetensors``, ``diffusion_pytorch_model*.bin`` ->
``diffusion_pytorch_model*.safetensors``. A pickle that already has its safetensors twin is left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path


logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class Conversion:
    """One pickle and the safetensors file made (or found) for it."""

    source: Path
    target: Path
    tensors: int
    skipped: bool


def target_name(pickle_name: str) -> str:
    """The safetensors name ``from_pretrained`` looks for in place of ``pickle_name``."""
    stem = pickle_name.rsplit(".", 1)[0]
    if stem.startswith("pytorch_model"):
        stem = "model" + stem[len("pytorch_model") :]
    return stem + ".safetensors"


def _state_dict(path: Path) -> dict:
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded:
        raise ValueError(f"{path} does not hold a state dict (got {type(loaded).__name__})")
    not_tensors = sorted(str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ValueError(f"{path}: entries that are not tensors cannot be converted: {not_tensors[:5]}")
    # safetensors refuses tensors that share memory (tied weights): give each its own contiguous copy
    return {str(k): v.detach().clone().contiguous() for k, v in loaded.items()}


def convert_pickles(folder: str | Path, dry_run: bool = False) -> list[Conversion]:
    """Convert every pickled weights file under ``folder`` that lacks its safetensors twin; returns what was done."""
    from safetensors.torch import save_file

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    done = []
    for source in sorted(p for p in root.rglob("*") if p.suffix in PICKLE_SUFFIXES and p.is_file()):
        target = source.with_name(target_name(source.name))
        if target.exists():
            done.append(Conversion(source, target, 0, skipped=True))
            continue
        if dry_run:
            done.append(Conversion(source, target, 0, skipped=False))
            continue
        tensors = _state_dict(source)
        partial = target.with_name(target.name + ".partial")
        save_file(tensors, str(partial), metadata={"format": "pt", "converted_from": source.name})
        partial.replace(target)  # a killed conversion never leaves a safetensors file that looks complete
        logger.info("converted %s -> %s (%d tensors)", source, target.name, len(tensors))
        done.append(Conversion(source, target, len(tensors), skipped=False))
    return done
