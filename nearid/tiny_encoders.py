"""Tiny random-weight image encoders in the layouts of the real checkpoints the scorers load.

SigLIP2 and CLIP are saved as full two-tower models, as published, so that the real vision-only
loaders (``SiglipVisionModel.from_pretrained``, ``CLIPVisionModelWithProjection.from_pretrained``)
read them exactly as they read the hub checkpoints; DINOv2 is a single tower, as published.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch


logger = logging.getLogger(__name__)

TINY_IMAGE_SIZE = 64
TINY_PATCH = 8


def tiny_siglip(seed: int = 0) -> tuple[Any, Any]:
    """A SiglipModel (vision tower with its MAP head, tiny text tower) and its image processor."""
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config={
            "vocab_size": 256,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "projection_size": 128,
            "bos_token_id": None,
            "eos_token_id": 1,
            "pad_token_id": 0,
        },
        vision_config={
            "image_size": TINY_IMAGE_SIZE,
            "patch_size": TINY_PATCH,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
    )
    processor = SiglipImageProcessorPil(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    return SiglipModel(config).eval(), processor


def tiny_clip(seed: int = 0) -> tuple[Any, Any]:
    """A CLIPModel (ViT vision tower with projection, tiny text tower) and its image processor."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": 514,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": 512,
            "eos_token_id": 513,
            "pad_token_id": 513,
            "projection_dim": 48,
        },
        vision_config={
            "image_size": TINY_IMAGE_SIZE,
            "patch_size": TINY_PATCH,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "projection_dim": 48,
        },
        projection_dim=48,
    )
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    )
    return CLIPModel(config).eval(), processor


def tiny_dinov2(seed: int = 0) -> tuple[Any, Any]:
    """A Dinov2Model and the BitImageProcessor that DINOv2 checkpoints ship with."""
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(
        image_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    processor = BitImageProcessorPil(
        size={"shortest_edge": TINY_IMAGE_SIZE + 8},
        crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
        do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    return Dinov2Model(config).eval(), processor


ENCODER_BUILDERS = {
    "siglip2": (tiny_siglip, "google/siglip2-so400m-patch14-384"),
    "clip-vit": (tiny_clip, "openai/clip-vit-large-patch14"),
    "dinov2": (tiny_dinov2, "facebook/dinov2-large"),
}
"""Tiny encoder folder name -> (builder, the public model id it stands in for)."""


def save_tiny_encoders(out_dir: Path, seed: int = 0) -> dict[str, str]:
    """Build and ``save_pretrained`` every tiny encoder with its processor; return folder -> model id."""
    saved: dict[str, str] = {}
    for offset, (name, (builder, model_id)) in enumerate(ENCODER_BUILDERS.items()):
        model, processor = builder(seed + 10 * offset)
        model.save_pretrained(out_dir / name)
        processor.save_pretrained(out_dir / name)
        saved[name] = model_id
        logger.info("saved tiny %s (%s)", name, model_id)
    return saved
