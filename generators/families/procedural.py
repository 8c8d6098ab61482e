"""The procedural generator: a different but similar synthetic object, painted on CPU with no weights.

The old object is removed by real inpainting (OpenCV Telea over the dilated mask); the new object is
the one the prompt describes (with the ``self`` prompt strategy, a one-attribute perturbation of it),
drawn at the old object's centre and size. Descriptions it cannot read get a random object.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from generators.base import Generator, WorkItem
from generators.policy import dilate
from nearid.common.procedural import ViewPose, perturb, random_spec, render_object, spec_from_description


class ProceduralGenerator(Generator):
    family = "procedural"
    needs_torch = False

    def _load(self) -> None:
        """Nothing to load."""

    def _run(self, items: list[WorkItem]) -> list[Image.Image]:
        return [self._paint(item) for item in items]

    def _paint(self, item: WorkItem) -> Image.Image:
        rng = np.random.default_rng(item.request.seed)
        spec = spec_from_description(item.request.prompt)
        if spec is None:
            spec = random_spec(rng)
        elif self.config.prompt_strategy == "self":
            spec = perturb(spec, rng)
        hole = dilate(item.mask, 2).astype(np.uint8) * 255
        background = cv2.inpaint(np.asarray(item.image), hole, 5, cv2.INPAINT_TELEA)
        ys, xs = np.nonzero(item.mask)
        radius = max(2.0, math.sqrt(len(xs) / math.pi))
        pose = ViewPose(center=(xs.mean() + 0.5, ys.mean() + 0.5), radius=radius, angle=float(rng.uniform(-25, 25)))
        painted, _ = render_object(background, spec, pose)
        return Image.fromarray(painted, "RGB")
