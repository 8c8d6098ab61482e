"""Tiny random-weight image encoders in the layouts of the real checkpoints the scorers load.

SigLIP2 and CLIP are saved as full two-tower models, as published, so that the real vision-only
loaders (``SiglipVisionModel.from_pretrained``, ``CLIPVisionModelWithProjection.from_pretrained``)
read them exactly as they read the hub checkpoints; DINOv2 is a single tower, as published. The
Qwen3-VL judge is saved as the hub folders are: model, tokenizer and image processor side by side.
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


SIGLIP_TOWERS: dict[str, dict[str, int]] = {
    "base": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 16,
    },
    "so400m": {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "image_size": 384,
        "patch_size": 14,
    },
}
"""Real-size SigLIP vision towers for benchmarks: ViT-B/16 at 224 px and google/siglip2-so400m-patch14-384."""


def save_siglip_tower(
    folder: Path, size: str = "tiny", device: str | None = None, dtype: torch.dtype | None = None
) -> str:
    """Save a random-weight SigLIP vision tower with its MAP head and image processor into ``folder``: the tiny
    test model, or a real-size one (``SIGLIP_TOWERS``) whose timings, not outputs, are real."""
    from transformers import SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel

    if size == "tiny":
        model, processor = tiny_siglip()
    elif size in SIGLIP_TOWERS:
        shape = SIGLIP_TOWERS[size]
        with torch.device(device or "cpu"):
            model = SiglipVisionModel(SiglipVisionConfig(**shape, vision_use_head=True)).to(dtype).eval()
        side = shape["image_size"]
        processor = SiglipImageProcessorPil(size={"height": side, "width": side}, resample=3)
    else:
        raise ValueError(f"unknown tower size {size!r}; valid: tiny, {', '.join(SIGLIP_TOWERS)}")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


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


QWEN_VL_SPECIAL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def tiny_qwen3_vl(seed: int = 0) -> tuple[Any, Any]:
    """A Qwen3-VL image-text-to-text model and its (tokenizer, image processor).

    The published processor class also needs a video processor, which requires torchvision; the judge
    only needs the two parts saved here, so they are returned as a pair and loaded separately
    (``AutoTokenizer``, ``AutoImageProcessor(..., backend="pil")``). Patch size 16, spatial merge 2 and
    temporal patch 2 are the real model's, so prompts carry the same number of image tokens per pixel;
    images are resized to at most 128x128 to keep the tiny model fast.
    """
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from nearid.offline.tiny_components import tiny_qwen_tokenizer

    tokenizer = tiny_qwen_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_VL_SPECIAL_TOKENS)})
    tokenizer.pad_token = "<|endoftext|>"
    token = {name: tokenizer.convert_tokens_to_ids(name) for name in (*QWEN_VL_SPECIAL_TOKENS, "<|endoftext|>")}
    torch.manual_seed(seed)
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": [4, 2, 2],  # sums to head_dim / 2, as [24, 20, 20] does for 128
                "mrope_interleaved": True,
            },
            "pad_token_id": token["<|endoftext|>"],
            "eos_token_id": token["<|im_end|>"],
            "bos_token_id": None,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 32,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [1],
        },
        image_token_id=token["<|image_pad|>"],
        video_token_id=token["<|video_pad|>"],
        vision_start_token_id=token["<|vision_start|>"],
        vision_end_token_id=token["<|vision_end|>"],
    )
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = token["<|im_end|>"]
    model.generation_config.pad_token_id = token["<|endoftext|>"]
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 32 * 32, "longest_edge": 128 * 128},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return model, (tokenizer, image_processor)


ENCODER_BUILDERS = {
    "siglip2": (tiny_siglip, "google/siglip2-so400m-patch14-384"),
    "clip-vit": (tiny_clip, "openai/clip-vit-large-patch14"),
    "dinov2": (tiny_dinov2, "facebook/dinov2-large"),
    "qwen3-vl": (tiny_qwen3_vl, "Qwen/Qwen3-VL-8B-Instruct"),
}
"""Tiny encoder folder name -> (builder, the public model id it stands in for). A builder returns the model and
its processor, or a tuple of processor parts (tokenizer, image processor) that are all saved in the same folder."""


def save_tiny_encoders(out_dir: Path, seed: int = 0) -> dict[str, str]:
    """Build and ``save_pretrained`` every tiny encoder with its processor; return folder -> model id."""
    saved: dict[str, str] = {}
    for offset, (name, (builder, model_id)) in enumerate(ENCODER_BUILDERS.items()):
        model, processor = builder(seed + 10 * offset)
        model.save_pretrained(out_dir / name)
        for part in processor if isinstance(processor, tuple) else (processor,):
            part.save_pretrained(out_dir / name)
        saved[name] = model_id
        logger.info("saved tiny %s (%s)", name, model_id)
    return saved
