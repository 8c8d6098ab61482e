"""Tiny random-weight pipelines for every diffusers family the generators use, built offline.

Shapes follow the real checkpoints wherever pipeline code depends on them (16-channel FLUX latents,
9-channel SDXL inpainting UNet, an 8x VAE everywhere, the Qwen inpainting ControlNet's 4 extra
condition channels), so the real ``from_pretrained`` loading and calling code runs unchanged on them.
Tokenizers are built from in-memory vocabularies: no hub, no sentencepiece.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from nearid.offline.tiny_components import (
    TEXT_DIM,
    randomise,
    seed_torch,
    tiny_clip_text,
    tiny_clip_tokenizer,
    tiny_qwen_tokenizer,
    tiny_t5_tokenizer,
    tiny_vae,
)


logger = logging.getLogger(__name__)

LIGHTNING_WEIGHT_NAME = "Qwen-Image-Lightning-8steps-V1.1.safetensors"


# -- FLUX -----------------------------------------------------------------------------------------


def _flux_components(seed: int, in_channels: int) -> dict[str, Any]:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    clip_tokenizer, t5_tokenizer = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    seed_torch(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=in_channels,
        out_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    ).eval()
    seed_torch(seed + 1)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return {
        "scheduler": scheduler,
        "vae": tiny_vae(seed + 2, "flux"),
        "text_encoder": tiny_clip_text(seed + 3, len(clip_tokenizer)),
        "tokenizer": clip_tokenizer,
        "text_encoder_2": t5,
        "tokenizer_2": t5_tokenizer,
        "transformer": transformer,
    }


def tiny_flux_fill(seed: int = 0) -> Any:
    """FluxFillPipeline: 384 transformer input channels = latents + masked-image latents + packed 8x8 mask."""
    from diffusers import FluxFillPipeline

    return FluxFillPipeline(**_flux_components(seed, in_channels=384))


def tiny_flux_canny(seed: int = 0) -> Any:
    """FluxControlInpaintPipeline (FLUX.1-Canny-dev layout): 128 input channels = latents + control latents."""
    from diffusers import FluxControlInpaintPipeline

    return FluxControlInpaintPipeline(**_flux_components(seed, in_channels=128))


# -- SDXL -----------------------------------------------------------------------------------------


def tiny_sdxl_inpaint(seed: int = 0) -> Any:
    """StableDiffusionXLInpaintPipeline with a 9-channel inpainting UNet, as in the SDXL inpainting 0.1 repo."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel

    tokenizer = tiny_clip_tokenizer()
    seed_torch(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + TEXT_DIM,
        cross_attention_dim=2 * TEXT_DIM,
        norm_num_groups=8,
    ).eval()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
        prediction_type="epsilon",
    )
    return StableDiffusionXLInpaintPipeline(
        vae=tiny_vae(seed + 1, "sdxl"),
        text_encoder=tiny_clip_text(seed + 2, len(tokenizer)),
        text_encoder_2=tiny_clip_text(seed + 3, len(tokenizer), with_projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tiny_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
    )


# -- Qwen-Image -----------------------------------------------------------------------------------

QWEN_HEADS = {"attention_head_dim": 16, "num_attention_heads": 2, "axes_dims_rope": (8, 4, 4)}


def tiny_qwen_image(seed: int = 0) -> Any:
    """The base Qwen-Image pipeline (text-to-image layout, as published at ``Qwen/Qwen-Image``)."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = tiny_qwen_tokenizer()
    seed_torch(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=2,
        joint_attention_dim=TEXT_DIM,
        guidance_embeds=False,
        **QWEN_HEADS,
    ).eval()
    seed_torch(seed + 1)
    vae = AutoencoderKLQwenImage(
        base_dim=16,
        z_dim=16,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 16,
        latents_std=[1.0] * 16,
    ).eval()
    seed_torch(seed + 2)
    special = len(tokenizer)
    text_encoder = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config={
                "vocab_size": special + 8,
                "hidden_size": TEXT_DIM,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "rope_scaling": {"mrope_section": [2, 3, 3], "rope_type": "default", "type": "default"},
                "rope_theta": 1_000_000.0,
                "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                "eos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                "pad_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            },
            vision_config={
                "depth": 1,
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_heads": 2,
                "out_hidden_size": TEXT_DIM,
            },
            vocab_size=special + 8,
            image_token_id=special + 1,
            video_token_id=special + 2,
            vision_start_token_id=special + 3,
            vision_end_token_id=special + 4,
        )
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=math.log(3),
        max_image_seq_len=8192,
        max_shift=math.log(3),
        shift=1.0,
        shift_terminal=None,
        time_shift_type="exponential",
        use_dynamic_shifting=True,
    )
    return QwenImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )


def tiny_qwen_inpaint_controlnet(seed: int = 0) -> Any:
    """The InstantX inpainting ControlNet layout: 64 latent + 4 extra condition channels, zero layers randomised."""
    from diffusers import QwenImageControlNetModel

    seed_torch(seed)
    controlnet = QwenImageControlNetModel(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=1,
        joint_attention_dim=TEXT_DIM,
        extra_condition_channels=4,
        **QWEN_HEADS,
    ).eval()
    randomise(controlnet.controlnet_x_embedder, seed + 1)
    randomise(controlnet.controlnet_blocks, seed + 2)
    return controlnet


def tiny_lightning_lora(transformer: torch.nn.Module, seed: int = 0, rank: int = 4) -> dict[str, torch.Tensor]:
    """A LoRA state dict in the Lightning file's key layout (``<module>.lora_down/lora_up.weight`` and
    ``<module>.alpha``) over every linear layer of the transformer blocks."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in transformer.named_modules():
        if not name.startswith("transformer_blocks.") or not isinstance(module, torch.nn.Linear):
            continue
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.1
        tensors[f"{name}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.1
        tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    return tensors


# -- saving ---------------------------------------------------------------------------------------

PIPELINE_BUILDERS = {
    "flux-fill": (tiny_flux_fill, "black-forest-labs/FLUX.1-Fill-dev"),
    "flux-canny": (tiny_flux_canny, "black-forest-labs/FLUX.1-Canny-dev"),
    "sdxl-inpaint": (tiny_sdxl_inpaint, "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"),
    "qwen-image": (tiny_qwen_image, "Qwen/Qwen-Image"),
}
"""Tiny pipeline folder name -> (builder, the public model id it stands in for)."""


def save_tiny_pipelines(out_dir: Path, seed: int = 0) -> dict[str, str]:
    """Build and ``save_pretrained`` every tiny pipeline, ControlNet and LoRA; return folder -> model id."""
    from safetensors.torch import save_file

    saved: dict[str, str] = {}
    for offset, (name, (builder, model_id)) in enumerate(PIPELINE_BUILDERS.items()):
        pipe = builder(seed + 100 * offset)
        pipe.save_pretrained(out_dir / name)
        saved[name] = model_id
        logger.info("saved tiny %s (%s)", name, model_id)
        if name == "qwen-image":
            lora = tiny_lightning_lora(pipe.transformer, seed=seed + 7)
            (out_dir / "qwen-lightning").mkdir(parents=True, exist_ok=True)
            save_file(lora, str(out_dir / "qwen-lightning" / LIGHTNING_WEIGHT_NAME))
            saved["qwen-lightning"] = "lightx2v/Qwen-Image-Lightning"
    tiny_qwen_inpaint_controlnet(seed + 50).save_pretrained(out_dir / "qwen-controlnet-inpaint")
    saved["qwen-controlnet-inpaint"] = "InstantX/Qwen-Image-ControlNet-Inpainting"
    return saved
