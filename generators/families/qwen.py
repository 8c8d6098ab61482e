"""Qwen-Image + InstantX inpainting ControlNet + Lightning 8-step LoRA (fused on the device, then unloaded)."""

from __future__ import annotations

import functools
from typing import Any

from PIL import Image

from generators.base import Generator, WorkItem
from nearid.common.weights import require_weights


@functools.cache
def seeded_pipeline_class() -> type:
    """diffusers' Qwen ControlNet inpainting pipeline, with each control image's VAE posterior drawn from its own
    image's generator. diffusers draws it from the global RNG for the whole batch, so an image made in a batch
    would differ from the same image made alone; here both are equal, and batches are reproducible."""
    import torch
    from diffusers import QwenImageControlNetInpaintPipeline

    class SeededQwenInpaintPipeline(QwenImageControlNetInpaintPipeline):
        _generators: list | None = None

        def __call__(self, *args: Any, generator: Any = None, **kwargs: Any) -> Any:
            self._generators = generator if isinstance(generator, list) else None
            try:
                return super().__call__(*args, generator=generator, **kwargs)
            finally:
                self._generators = None

        def prepare_image_with_mask(self, image: Any, mask: Any, *args: Any, **kwargs: Any) -> Any:
            rngs = self._generators
            if rngs is None or not isinstance(image, list) or len(image) != len(rngs):
                return super().prepare_image_with_mask(image, mask, *args, **kwargs)
            kwargs.update(batch_size=1, num_images_per_prompt=1)
            parts = []
            for picture, hole, rng in zip(image, mask, rngs, strict=True):
                seed = int(torch.randint(0, 2**62, (1,), generator=rng))  # drawn before the noise, as alone
                devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    parts.append(super().prepare_image_with_mask([picture], [hole], *args, **kwargs))
            return torch.cat(parts)

    return SeededQwenInpaintPipeline


class QwenInpaintGenerator(Generator):
    """Starts from pure noise (no strength); the ControlNet sees the anchor and the mask. Batches draw every
    image's noise and VAE posterior from its own generator (``seeded_pipeline_class``)."""

    family = "qwen-inpaint"
    forbidden_dtypes = ("float16",)

    def _load(self) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageControlNetModel

        base, cn_ref, lora = (self.config.model(r) for r in ("pipeline", "controlnet", "lora"))
        dtype = self.torch_dtype()
        for ref in (base, cn_ref, lora):
            require_weights(self.model_path(ref), hint="pass --model-dir DIR holding the weights", recursive=True)
        controlnet = QwenImageControlNetModel.from_pretrained(
            self.model_path(cn_ref), revision=cn_ref.revision, dtype=dtype, use_safetensors=True
        )
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(dict(self.config.extra("scheduler_config")))
        self.pipe = seeded_pipeline_class().from_pretrained(
            self.model_path(base),
            revision=base.revision,
            controlnet=controlnet,
            scheduler=scheduler,
            dtype=dtype,
            use_safetensors=True,
        )
        self.pipe.to(self.device)  # fuse on the device: no second host copy of the 20 B transformer
        self.pipe.load_lora_weights(
            self.model_path(lora), weight_name=lora.weight_name, adapter_name="lightning", use_safetensors=True
        )
        self.pipe.fuse_lora(lora_scale=self.config.extra("lora_scale", 1.0))
        self.pipe.unload_lora_weights()
        self.pipe.set_progress_bar_config(disable=True)

    def _run(self, items: list[WorkItem]) -> list[Image.Image]:
        width, height = items[0].image.size
        return self.pipe(
            prompt=[item.request.prompt for item in items],
            negative_prompt=[self.config.negative_prompt or " "] * len(items),
            control_image=[item.image for item in items],
            control_mask=[item.mask_image for item in items],
            height=height,
            width=width,
            num_inference_steps=self.config.steps,
            true_cfg_scale=self.config.guidance,
            controlnet_conditioning_scale=self.config.extra("controlnet_conditioning_scale", 1.0),
            generator=[self.seeded_generator(item.request.seed) for item in items],
        ).images
