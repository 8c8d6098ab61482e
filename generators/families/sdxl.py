"""SDXL inpainting 0.1 (diffusers StableDiffusionXLInpaintPipeline, 9-channel UNet)."""

from __future__ import annotations

from PIL import Image

from generators.base import PipelineGenerator, WorkItem


class SDXLInpaintGenerator(PipelineGenerator):
    """Classifier-free guidance with a negative prompt against text, watermarks and low resolution."""

    family = "sdxl-inpaint"
    pipeline_class = "StableDiffusionXLInpaintPipeline"

    def _run(self, items: list[WorkItem]) -> list[Image.Image]:
        width, height = items[0].image.size
        self.seed_global(items[0].request.seed)
        return self.pipe(
            prompt=[i.request.prompt for i in items],
            negative_prompt=[self.config.negative_prompt or ""] * len(items),
            image=[i.image for i in items],
            mask_image=[i.mask_image for i in items],
            height=height,
            width=width,
            strength=self.config.strength,
            num_inference_steps=self.config.steps,
            guidance_scale=self.config.guidance,
            generator=[self.seeded_generator(i.request.seed) for i in items],
        ).images
