"""PowerPaint v2 (BrushNet-CA on an SD1.5 / Realistic Vision base) for text-guided object inpainting.

Two text paths: the PowerPaint CLIP, extended with 30 task tokens, conditions the BrushNet branch with the task
prompt (" P_obj" for object insertion), and the base CLIP conditions the base UNet with the object description.
Classifier-free guidance runs over the batch ``[uncond, cond]`` and is applied once, to the UNet output.

Mask convention: white (>= 0.5) = repaint. The branch sees the VAE latents of ``image * (1 - mask)`` (the hole is -1
after normalisation) and a mask channel that is 1 on known pixels, nearest-resized to the latent size. Nothing is
pasted back; composite afterwards if the background must be pixel-identical.

Only safetensors are loaded, never pickle files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel, UniPCMultistepScheduler
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from generators.powerpaint.brushnet import BrushNetModel, load_brushnet
from generators.powerpaint.checkpoint import (
    BRUSHNET_FOLDER,
    BRUSHNET_WEIGHTS,
    check_state_dict_keys,
    find_text_encoder_file,
    find_unet_weights,
    require_safetensors,
)
from generators.powerpaint.text_encoder import (
    OBJECT_NEGATIVE_PROMPT,
    OBJECT_PROMPT,
    TASK_TOKENS,
    add_task_tokens,
    expand_task_tokens,
    load_brushnet_text_encoder,
)
from generators.powerpaint.trunk import check_unet_config, unet_forward_with_brushnet


logger = logging.getLogger(__name__)


# -- inputs ---------------------------------------------------------------------------------------


def prepare_mask_and_masked_image(
    image: PIL.Image.Image, mask_image: PIL.Image.Image
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(masked_image, hole)``: ``image * (1 - hole)`` scaled to [-1, 1] (hole = -1) and the hole binarised at 0.5.

    Shapes ``[1, 3, H, W]`` and ``[1, 1, H, W]``; the hole is 1 where the mask is white.
    """
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    gray = np.asarray(mask_image.convert("L"), dtype=np.float32) / 255.0
    hole = torch.from_numpy((gray >= 0.5).astype(np.float32))[None, None]
    return pixels * (1.0 - hole) * 2.0 - 1.0, hole


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


class PowerPaintPipeline(DiffusionPipeline):
    """PowerPaint v2 text-guided object inpainting: BrushNet branch + base SD1.5 UNet, UniPC, CFG."""

    model_cpu_offload_seq = "text_encoder_brushnet->text_encoder->brushnet->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: Any,
        tokenizer: Any,
        unet: UNet2DConditionModel,
        brushnet: BrushNetModel,
        text_encoder_brushnet: Any,
        tokenizer_brushnet: Any,
        scheduler: UniPCMultistepScheduler,
    ) -> None:
        super().__init__()
        check_unet_config(unet.config)
        missing = [token for token in TASK_TOKENS if token not in tokenizer_brushnet.get_vocab()]
        if missing:
            raise ValueError(f"tokenizer_brushnet lacks the task tokens {missing[:3]}...: call add_task_tokens on it")
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            brushnet=brushnet,
            text_encoder_brushnet=text_encoder_brushnet,
            tokenizer_brushnet=tokenizer_brushnet,
            scheduler=scheduler,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    def check_inputs(
        self,
        prompt: str,
        image: PIL.Image.Image,
        mask_image: PIL.Image.Image,
        negative_prompt: str,
        num_inference_steps: int,
        output_type: str,
    ) -> None:
        """Raise ``ValueError`` naming the first bad input; nothing is fixed silently."""
        if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
            raise ValueError(f"prompt and negative_prompt must be str, got {type(prompt)} and {type(negative_prompt)}")
        if not isinstance(image, PIL.Image.Image) or not isinstance(mask_image, PIL.Image.Image):
            raise ValueError(f"image and mask_image must be PIL images, got {type(image)} and {type(mask_image)}")
        if image.mode != "RGB":
            raise ValueError(f"image must be RGB, got mode {image.mode!r}: convert it with image.convert('RGB')")
        if mask_image.mode not in ("L", "1"):
            raise ValueError(f"mask_image must be grayscale (mode 'L' or '1'), got mode {mask_image.mode!r}")
        if image.size != mask_image.size:
            raise ValueError(f"image size {image.size} and mask_image size {mask_image.size} differ")
        if any(side % self.vae_scale_factor for side in image.size):
            raise ValueError(f"image size {image.size} must be a multiple of {self.vae_scale_factor} on both sides")
        if not (np.asarray(mask_image.convert("L")) >= 128).any():
            raise ValueError("mask_image is empty: no pixel is >= 0.5 (white = repaint)")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")

    def _encode(self, tokenizer: Any, text_encoder: Any, texts: list[str]) -> torch.Tensor:
        """Last hidden states of ``texts`` padded to the tokenizer's max length (77 for CLIP)."""
        tokens = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        hidden = text_encoder(tokens.input_ids.to(self._execution_device))[0]
        return hidden.to(dtype=self.unet.dtype)

    def encode_prompts(
        self, prompts: list[str], negative_prompt: str, guidance: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(base, branch)`` embeddings, each ``[uncond x B, cond x B]`` when ``guidance`` else ``[cond x B]``.

        The base UNet reads the object descriptions; the branch reads the object-insertion task prompt.
        """
        batch = len(prompts)
        base_texts = [negative_prompt] * batch + prompts if guidance else prompts
        branch_texts = (
            [OBJECT_NEGATIVE_PROMPT] * batch + [OBJECT_PROMPT] * batch if guidance else [OBJECT_PROMPT] * batch
        )
        base = self._encode(self.tokenizer, self.text_encoder, base_texts)
        branch_texts = [expand_task_tokens(text) for text in branch_texts]
        branch = self._encode(self.tokenizer_brushnet, self.text_encoder_brushnet, branch_texts)
        return base, branch

    def prepare_conditioning(
        self, image: PIL.Image.Image, mask_image: PIL.Image.Image, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Branch conditioning ``[masked-image latents, known-pixel mask]`` at latent size, ``[1, C + 1, h, w]``.

        The VAE posterior is sampled with ``generator``, so the result does not depend on the global RNG.
        """
        masked_image, hole = prepare_mask_and_masked_image(image, mask_image)
        masked_image = masked_image.to(device=self._execution_device, dtype=self.vae.dtype)
        posterior = self.vae.encode(masked_image).latent_dist
        latents = posterior.sample(generator=generator) * self.vae.config.scaling_factor
        known = F.interpolate(1.0 - hole, size=latents.shape[-2:], mode="nearest")
        return torch.cat([latents, known.to(latents)], dim=1).to(dtype=self.brushnet.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        image: PIL.Image.Image | list[PIL.Image.Image],
        mask_image: PIL.Image.Image | list[PIL.Image.Image],
        negative_prompt: str = "",
        num_inference_steps: int = 45,
        guidance_scale: float = 7.5,
        brushnet_conditioning_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
    ) -> ImagePipelineOutput:
        """Paint each prompt into the white area of its mask; outputs have their image's size. A batch is lists
        of equal-size images with one generator each: every image then equals the one it gives alone."""
        # 1. Check inputs
        prompts, images = _as_list(prompt), _as_list(image)
        masks, generators = _as_list(mask_image), _as_list(generator) if generator is not None else None
        if len({len(prompts), len(images), len(masks), len(generators or images)}) != 1:
            raise ValueError("prompt, image, mask_image and generator lists must have the same length")
        for text, picture, mask in zip(prompts, images, masks, strict=True):
            self.check_inputs(text, picture, mask, negative_prompt, num_inference_steps, output_type)
        if len({picture.size for picture in images}) != 1:
            raise ValueError(f"a batch needs images of one size, got {sorted({p.size for p in images})}")
        device = self._execution_device
        guidance = guidance_scale > 1.0

        # 2. Encode the two text paths
        base_embeds, branch_embeds = self.encode_prompts(prompts, negative_prompt, guidance)

        # 3. Timesteps and initial noise, one generator per image
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        height, width = images[0].height // self.vae_scale_factor, images[0].width // self.vae_scale_factor
        rngs = generators or [None] * len(images)
        noise = [
            randn_tensor(
                (1, self.unet.config.in_channels, height, width), generator=g, device=device, dtype=self.unet.dtype
            )
            for g in rngs
        ]
        latents = torch.cat(noise) * self.scheduler.init_noise_sigma

        # 4. Branch conditioning: masked-image latents + known-pixel mask, each image with its own generator
        conditioning = torch.cat(
            [self.prepare_conditioning(p, m, g) for p, m, g in zip(images, masks, rngs, strict=True)]
        )
        if guidance:
            conditioning = torch.cat([conditioning] * 2)

        # 5. Denoising loop
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for t in timesteps:
                model_input = torch.cat([latents] * 2) if guidance else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                residuals = self.brushnet(
                    model_input.to(self.brushnet.dtype),
                    t,
                    encoder_hidden_states=branch_embeds.to(self.brushnet.dtype),
                    brushnet_cond=conditioning,
                    conditioning_scale=brushnet_conditioning_scale,
                )
                noise = unet_forward_with_brushnet(self.unet, model_input, t, base_embeds, *residuals)
                if guidance:
                    uncond, cond = noise.chunk(2)
                    noise = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(noise, t, latents, return_dict=False)[0]
                progress_bar.update()

        # 6. Decode
        if output_type == "latent":
            images = latents
        else:
            decoded = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor, return_dict=False)
            images = self.image_processor.postprocess(decoded[0], output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images)


# -- loading --------------------------------------------------------------------------------------


def load_unet(unet_dir: Path, torch_dtype: torch.dtype) -> UNet2DConditionModel:
    """The base UNet from its config and its weights file, whatever the hub named it; keys checked strictly."""
    from safetensors.torch import load_file

    weights = find_unet_weights(unet_dir)
    if weights.name == "diffusion_pytorch_model.safetensors":
        return UNet2DConditionModel.from_pretrained(unet_dir, dtype=torch_dtype, use_safetensors=True)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(unet_dir))
    state = load_file(str(weights))
    expected = {key: tuple(value.shape) for key, value in unet.state_dict().items()}
    check_state_dict_keys(expected, {key: tuple(value.shape) for key, value in state.items()}, f"UNet {weights}")
    unet.load_state_dict(state, strict=True)
    logger.info("loaded the base UNet from %s", weights)
    return unet.to(torch_dtype).eval()


def load_powerpaint(
    checkpoint_dir: str | Path, base_dir: str | Path, torch_dtype: torch.dtype = torch.float32
) -> PowerPaintPipeline:
    """Assemble the pipeline from a PowerPaint v2 checkpoint folder and a diffusers SD1.5 base folder.

    ``checkpoint_dir/PowerPaint_Brushnet/`` holds the branch (``diffusion_pytorch_model.safetensors``, no config:
    its skeleton comes from the base UNet config) and the PowerPaint text encoder as safetensors. ``base_dir``
    (Realistic Vision V6.0) gives the UNet, VAE, base text encoder, tokenizer and scheduler config (-> UniPC).
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    checkpoint_dir, base_dir = Path(checkpoint_dir), Path(base_dir)
    for component in ("unet", "vae", "text_encoder"):
        require_safetensors(base_dir / component)
    unet = load_unet(base_dir / "unet", torch_dtype)
    vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae", dtype=torch_dtype, use_safetensors=True)
    text_encoder = CLIPTextModel.from_pretrained(base_dir / "text_encoder", dtype=torch_dtype, use_safetensors=True)
    tokenizer = CLIPTokenizer.from_pretrained(base_dir / "tokenizer")
    scheduler = UniPCMultistepScheduler.from_config(
        UniPCMultistepScheduler.load_config(base_dir, subfolder="scheduler")
    )

    brushnet_dir = checkpoint_dir / BRUSHNET_FOLDER
    brushnet = load_brushnet(brushnet_dir / BRUSHNET_WEIGHTS, unet.config, torch_dtype)
    tokenizer_brushnet = add_task_tokens(CLIPTokenizer.from_pretrained(base_dir / "tokenizer"))
    text_encoder_brushnet = load_brushnet_text_encoder(
        find_text_encoder_file(brushnet_dir),
        CLIPTextConfig.from_pretrained(base_dir / "text_encoder"),
        tokenizer_brushnet,
        torch_dtype,
    )
    return PowerPaintPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        brushnet=brushnet,
        text_encoder_brushnet=text_encoder_brushnet,
        tokenizer_brushnet=tokenizer_brushnet,
        scheduler=scheduler,
    )
