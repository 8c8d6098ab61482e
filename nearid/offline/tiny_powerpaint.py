"""Tiny random-weight stand-ins for PowerPaint v2 and its Realistic Vision base, written in the published layouts.

``save_tiny_powerpaint`` writes a StableDiffusionPipeline folder for the base (4-channel UNet with both
cross-attention and plain blocks, an 8x VAE, a 32-wide CLIP text encoder) and a PowerPaint checkpoint folder:
``PowerPaint_Brushnet/diffusion_pytorch_model.safetensors`` with the branch keys and no config.json, and
``PowerPaint_Brushnet/model.safetensors`` with the text encoder in PowerPaint's wrapped-embedding key layout. So
``generators.powerpaint.pipeline.load_powerpaint`` runs unchanged on them, offline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from generators.powerpaint.brushnet import BrushNetModel
from generators.powerpaint.checkpoint import BRUSHNET_FOLDER, BRUSHNET_WEIGHTS
from generators.powerpaint.text_encoder import (
    TASK_TOKEN_NAMES,
    TEXT_MODEL_PREFIX,
    TRAINABLE_EMBEDDING_PREFIX,
    VECTORS_PER_TASK_TOKEN,
    WRAPPED_EMBEDDING_KEY,
)
from nearid.offline.tiny_components import TEXT_DIM, tiny_clip_text, tiny_clip_tokenizer, tiny_vae


logger = logging.getLogger(__name__)

BASE_FOLDER = "powerpaint-base"
CHECKPOINT_FOLDER = "powerpaint"
TEXT_ENCODER_WEIGHTS = "model.safetensors"
MODEL_IDS = {
    BASE_FOLDER: "SG161222/Realistic_Vision_V6.0_B1_noVAE",
    CHECKPOINT_FOLDER: "JunhaoZhuang/PowerPaint_v2",
}
"""Tiny folder name -> the public model id it stands in for."""


def tiny_powerpaint_base(seed: int = 0) -> Any:
    """A StableDiffusionPipeline shaped like SD1.5 in miniature, with the SD1.5 PNDM scheduler config."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()
    vae = tiny_vae(seed + 1, "sd15")
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=tiny_clip_text(seed + 2, len(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_brushnet(unet: Any, seed: int = 0, std: float = 0.05) -> BrushNetModel:
    """A branch initialised from ``unet`` whose zero convs and mask input channel get small random values.

    Zero-initialised output convs would make the branch a no-op, so the mask and image would not reach the image.
    """
    brushnet = BrushNetModel.from_unet(unet)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (brushnet.brushnet_down_blocks, brushnet.brushnet_mid_block, brushnet.brushnet_up_blocks):
            for param in module.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * std)
        mask_channel = brushnet.conv_in_condition.weight[:, -1:]
        mask_channel.copy_(torch.randn(mask_channel.shape, generator=generator) * std)
    return brushnet.eval()


def tiny_brushnet_text_encoder_state(seed: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """A PowerPaint text encoder state dict in the published layout: ``text_model.`` keys, the CLIP token table as
    ``token_embedding.wrapped.weight`` and ``[10, 32]`` trainable vectors per task word."""
    model = tiny_clip_text(seed, vocab_size)
    generator = torch.Generator().manual_seed(seed + 1)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        name = key.removeprefix(TEXT_MODEL_PREFIX)
        name = WRAPPED_EMBEDDING_KEY if name == "embeddings.token_embedding.weight" else name
        state[TEXT_MODEL_PREFIX + name] = tensor.clone().contiguous()
    for name in TASK_TOKEN_NAMES:
        vectors = torch.randn(VECTORS_PER_TASK_TOKEN, TEXT_DIM, generator=generator)
        state[TEXT_MODEL_PREFIX + TRAINABLE_EMBEDDING_PREFIX + name] = vectors
    return state


def save_tiny_powerpaint(out_dir: Path, seed: int = 0) -> dict[str, str]:
    """Write the tiny base pipeline and PowerPaint checkpoint folders under ``out_dir``; return folder -> model id."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    base = tiny_powerpaint_base(seed)
    base.save_pretrained(out_dir / BASE_FOLDER)

    brushnet_dir = out_dir / CHECKPOINT_FOLDER / BRUSHNET_FOLDER
    brushnet_dir.mkdir(parents=True, exist_ok=True)
    brushnet = tiny_brushnet(base.unet, seed + 10)
    save_file(
        {key: tensor.contiguous() for key, tensor in brushnet.state_dict().items()}, brushnet_dir / BRUSHNET_WEIGHTS
    )
    text_state = tiny_brushnet_text_encoder_state(seed + 20, len(base.tokenizer))
    save_file(text_state, brushnet_dir / TEXT_ENCODER_WEIGHTS)
    logger.info(
        "saved tiny PowerPaint (%s) and its base (%s) under %s",
        MODEL_IDS[CHECKPOINT_FOLDER],
        MODEL_IDS[BASE_FOLDER],
        out_dir,
    )
    return dict(MODEL_IDS)
