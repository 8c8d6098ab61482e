"""The release checkpoint layout of a trained NearID embedding: a frozen SigLIP vision tower whose MAP head slot
holds the trained head.

Layout of ``out_dir`` (the published one, so released checkpoints and ours load the same way):

* ``config.json``: ``model_type`` ``"nearid"``, ``vision_config`` (the SigLIP vision configuration), ``embed_dim``
  and ``normalize_embeddings`` (always true);
* ``model.safetensors``: fp16 tensors named ``backbone.vision_model.<key>`` for every key of the vision tower,
  with the trained head at ``backbone.vision_model.head.*`` (transformers 5 vision towers are flat, so the
  ``vision_model.`` level is added on save and removed on load);
* ``preprocessor_config.json``: the backbone's image processor.

Loading reads safetensors only and never runs code from the folder; missing, unexpected and mis-shaped tensors are
refused by name.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch


logger = logging.getLogger(__name__)

RELEASE_MODEL_TYPE = "nearid"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
KEY_PREFIX = "backbone.vision_model."
HEAD_PREFIX = "head."


class ReleaseLayoutError(ValueError):
    """A folder does not hold a valid release checkpoint."""


CARD_NAME = "README.md"
MODEL_CARD = """---
library_name: nearid
tags: [image-feature-extraction, siglip2, identity]
---
# {name}

A NearID embedding: a frozen SigLIP2 vision tower read out through its trained MAP head, {embed_dim}-dimensional,
L2-normalised; compare images by cosine. Trained on: {training}.

The folder is the NearID release layout (`config.json` with `model_type` "nearid", fp16 `model.safetensors`,
`preprocessor_config.json`). It ships no modelling code, so `AutoModel.from_pretrained` cannot load it (and no
`trust_remote_code` is needed or used); load it with nearid:

```python
from PIL import Image
from nearid.model.release import load_release

model, processor = load_release("{name}")  # device="cuda", dtype=torch.float16 on a GPU
pixels = processor(images=[Image.new("RGB", (64, 64), "white")], return_tensors="pt").pixel_values
embeddings = model.embed(pixels)  # [1, {embed_dim}], unit length
```

The NearID authors' `NearIDModel` class loads the same folder (no missing or unexpected keys).
"""
"""The release's ``README.md``: what the model is and the loading line that works in a fresh process."""


def is_release_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder whose ``config.json`` declares ``model_type`` ``"nearid"``."""
    config = Path(path) / CONFIG_NAME
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == RELEASE_MODEL_TYPE
    except (json.JSONDecodeError, AttributeError):
        return False


class NearIDEmbedder(torch.nn.Module):
    """A SigLIP vision tower read out through its (trained) MAP head; ``embed`` returns unit-length rows."""

    def __init__(self, backbone: torch.nn.Module, embed_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.embed_dim = embed_dim

    @torch.inference_mode()
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings [N, embed_dim] of preprocessed images [N, 3, H, W]."""
        pixel_values = pixel_values.to(device=self.backbone.device, dtype=self.backbone.dtype)
        pooled = self.backbone(pixel_values=pixel_values).pooler_output
        return torch.nn.functional.normalize(pooled.float(), dim=-1)


def _check_head(backbone: torch.nn.Module, head: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The head's tensors, refused unless they match the backbone's own head key for key and shape for shape."""
    if getattr(backbone, "head", None) is None:
        raise ValueError("backbone has no MAP head (vision_use_head is false); a release needs one")
    own = backbone.head.state_dict()
    trained = head.state_dict()
    missing = sorted(set(own) - set(trained))
    unexpected = sorted(set(trained) - set(own))
    if missing or unexpected:
        raise ValueError(f"head does not match the backbone's MAP head: missing {missing}, unexpected {unexpected}")
    shapes = [
        f"{k}: {tuple(trained[k].shape)} != {tuple(own[k].shape)}" for k in own if trained[k].shape != own[k].shape
    ]
    if shapes:
        raise ValueError(f"head tensors have the wrong shapes: {shapes}")
    return trained


def save_release(
    backbone: Any,
    head: torch.nn.Module,
    image_processor: Any,
    out_dir: str | Path,
    embed_dim: int | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``backbone`` (a ``SiglipVisionModel``) with ``head`` in its MAP head slot in the release layout.

    ``head`` must have the structure of ``backbone.head`` (its trained copy); ``embed_dim`` defaults to the vision
    hidden size, which is what the MAP head outputs, and any other value is refused. ``training`` (the run's
    distractor sources and splits) is recorded as ``nearid_training``, so a report can group sources by what this
    model saw; loaders ignore it.
    """
    from safetensors.torch import save_file

    hidden = int(backbone.config.hidden_size)
    embed_dim = hidden if embed_dim is None else int(embed_dim)
    if embed_dim != hidden:
        raise ValueError(f"embed_dim {embed_dim} differs from the MAP head's output size {hidden}")
    trained = _check_head(backbone, head)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in backbone.state_dict().items():
        if key.startswith(HEAD_PREFIX):
            value = trained[key[len(HEAD_PREFIX) :]]
        tensors[KEY_PREFIX + key] = value.detach().to("cpu", torch.float16).contiguous()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    vision_config = backbone.config.to_dict()
    for volatile in ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype"):
        vision_config.pop(volatile, None)
    config = {
        "model_type": RELEASE_MODEL_TYPE,
        "architectures": ["NearIDModel"],
        "vision_config": vision_config,
        "embed_dim": embed_dim,
        "normalize_embeddings": True,
        "torch_dtype": "float16",
    }
    if training:
        config["nearid_training"] = training
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    image_processor.save_pretrained(out)
    sources = ", ".join((training or {}).get("sources") or [])
    trained_on = f"distractors from {sources}" if sources else "not recorded"
    (out / CARD_NAME).write_text(MODEL_CARD.format(name=out.name, embed_dim=embed_dim, training=trained_on))
    logger.info("saved release checkpoint (%d tensors, embed_dim %d) to %s", len(tensors), embed_dim, out)
    return out


def read_release_config(path: str | Path) -> dict[str, Any]:
    """The release ``config.json``, checked for the fields the loader needs."""
    folder = Path(path)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise ReleaseLayoutError(f"{folder} has no {CONFIG_NAME}: not a release checkpoint")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != RELEASE_MODEL_TYPE:
        raise ReleaseLayoutError(f"{config_path}: model_type is {config.get('model_type')!r}, expected 'nearid'")
    for field in ("vision_config", "embed_dim"):
        if field not in config:
            raise ReleaseLayoutError(f"{config_path}: required field {field!r} is missing")
    if config.get("normalize_embeddings", True) is not True:
        raise ReleaseLayoutError(
            f"{config_path}: normalize_embeddings must be true (embeddings are compared by cosine)"
        )
    return config


def load_release(
    path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None
) -> tuple[NearIDEmbedder, Any]:
    """Load a release folder: the embedder (``embed(pixel_values)``) and its image processor.

    ``dtype`` defaults to float32 (the stored fp16 weights are upcast); pass ``torch.float16`` or
    ``torch.bfloat16`` on a GPU for the checkpoint's own precision.
    """
    from safetensors.torch import load_file
    from transformers import AutoImageProcessor, SiglipVisionConfig, SiglipVisionModel

    folder = Path(path)
    config = read_release_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ReleaseLayoutError(f"{folder} has no {WEIGHTS_NAME}")
    vision_config = SiglipVisionConfig(**config["vision_config"])
    if not vision_config.vision_use_head:
        raise ReleaseLayoutError(f"{folder}: vision_config.vision_use_head is false; a release needs its MAP head")
    if int(config["embed_dim"]) != vision_config.hidden_size:
        raise ReleaseLayoutError(
            f"{folder}: embed_dim {config['embed_dim']} differs from the head's output size "
            f"{vision_config.hidden_size}"
        )
    backbone = SiglipVisionModel(vision_config).eval()
    expected = backbone.state_dict()
    stored = load_file(str(weights))
    foreign = sorted(k for k in stored if not k.startswith(KEY_PREFIX))
    state = {k[len(KEY_PREFIX) :]: v for k, v in stored.items() if k.startswith(KEY_PREFIX)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected)) + foreign
    if missing or unexpected:
        raise ReleaseLayoutError(
            f"{weights}: missing tensors {[KEY_PREFIX + k for k in missing][:10]} ({len(missing)} in all), "
            f"unexpected tensors {unexpected[:10]} ({len(unexpected)} in all)"
        )
    shapes = [
        f"{k}: {tuple(v.shape)} != {tuple(expected[k].shape)}"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if shapes:
        raise ReleaseLayoutError(f"{weights}: tensors with the wrong shape: {shapes[:10]}")
    backbone.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    backbone.to(device=device, dtype=dtype or torch.float32)
    processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
    return NearIDEmbedder(backbone, int(config["embed_dim"])).eval(), processor
