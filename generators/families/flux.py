"""FLUX.1-Fill [dev] and FLUX.1-Canny [dev] inpainting (diffusers FluxFillPipeline / FluxControlInpaintPipeline)."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from generators.base import PipelineGenerator, WorkItem


class FluxFillGenerator(PipelineGenerator):
    """Guidance-distilled fill: one transformer pass per step, no negative prompt, strength 1."""

    family = "flux-fill"
    pipeline_class = "FluxFillPipeline"
    forbidden_dtypes = ("float16",)

    def _run(self, items: list[WorkItem]) -> list[Image.Image]:
        width, height = items[0].image.size
        self.seed_global(items[0].request.seed)
        return self.pipe(
            prompt=[i.request.prompt for i in items],
            image=[i.image for i in items],
            mask_image=[i.mask_image for i in items],
            height=height,
            width=width,
            num_inference_steps=self.config.steps,
            guidance_scale=self.config.guidance,
            max_sequence_length=self.config.extra("max_sequence_length", 512),
            generator=[self.seeded_generator(i.request.seed) for i in items],
        ).images


def canny_control(image: Image.Image, low: int, high: int) -> Image.Image:
    """Canny edges of the anchor at the working size, as a 3-channel control image."""
    edges = cv2.Canny(np.asarray(image.convert("RGB")), low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1), "RGB")


class FluxCannyGenerator(PipelineGenerator):
    """Structure-conditioned inpainting: Canny edges of the anchor steer the new object's outline."""

    family = "flux-canny"
    pipeline_class = "FluxControlInpaintPipeline"
    forbidden_dtypes = ("float16",)

    def _run(self, items: list[WorkItem]) -> list[Image.Image]:
        width, height = items[0].image.size
        low, high = self.config.extra("canny_low", 50), self.config.extra("canny_high", 200)
        self.seed_global(items[0].request.seed)
        return self.pipe(
            prompt=[i.request.prompt for i in items],
            image=[i.image for i in items],
            mask_image=[i.mask_image for i in items],
            control_image=[canny_control(i.image, low, high) for i in items],
            height=height,
            width=width,
            strength=self.config.strength,
            num_inference_steps=self.config.steps,
            guidance_scale=self.config.guidance,
            max_sequence_length=self.config.extra("max_sequence_length", 512),
            generator=[self.seeded_generator(i.request.seed) for i in items],
        ).images
