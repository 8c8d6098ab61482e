"""Qwen-Image + InstantX inpainting ControlNet + Lightning 8-step LoRA (fused, then unloaded)."""

from __future__ import annotations

from PIL import Image

from generators.base import Generator, WorkItem
from nearid.common.weights import require_weights


class QwenInpaintGenerator(Generator):
    """Starts from pure noise (no strength); the ControlNet sees the anchor and the mask.

    Not batched: the pipeline's VAE encode samples from the global RNG, so each image is made in its own
    call right after seeding it, which keeps every image reproducible on its own.
    """

    family = "qwen-inpaint"
    batchable = False
    forbidden_dtypes = ("float16",)

    def _load(self) -> None:
        from diffusers import (
            FlowMatchEulerDiscreteScheduler,
            QwenImageControlNetInpaintPipeline,
            QwenImageControlNetModel,
        )

        base, cn_ref, lora = (self.config.model(r) for r in ("pipeline", "controlnet", "lora"))
        dtype = self.torch_dtype()
        for ref in (base, cn_ref, lora):
            require_weights(self.model_path(ref), hint="pass --model-dir DIR holding the weights", recursive=True)
        controlnet = QwenImageControlNetModel.from_pretrained(
            self.model_path(cn_ref), revision=cn_ref.revision, dtype=dtype, use_safetensors=True
        )
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(dict(self.config.extra("scheduler_config")))
        self.pipe = QwenImageControlNetInpaintPipeline.from_pretrained(
            self.model_path(base),
            revision=base.revision,
            controlnet=controlnet,
            scheduler=scheduler,
            dtype=dtype,
            use_safetensors=True,
        )
        self.pipe.load_lora_weights(
            self.model_path(lora), weight_name=lora.weight_name, adapter_name="lightning", use_safetensors=True
        )
        self.pipe.fuse_lora(lora_scale=self.config.extra("lora_scale", 1.0))
        self.pipe.unload_lora_weights()
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    def _run(self, items: list[WorkItem]) -> list[Image.Image]:
        (item,) = items
        width, height = item.image.size
        self.seed_global(item.request.seed)
        return self.pipe(
            prompt=item.request.prompt,
            negative_prompt=self.config.negative_prompt,
            control_image=item.image,
            control_mask=item.mask_image,
            height=height,
            width=width,
            num_inference_steps=self.config.steps,
            true_cfg_scale=self.config.guidance,
            controlnet_conditioning_scale=self.config.extra("controlnet_conditioning_scale", 1.0),
            generator=self.seeded_generator(item.request.seed),
        ).images
