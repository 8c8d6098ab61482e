"""PowerPaint v2: our BrushNet branch on Realistic Vision V6.0, text-guided object inpainting."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from generators.base import Generator, WorkItem
from nearid.common.weights import require_weights


class PowerPaintGenerator(Generator):
    """UniPC, CFG 7.5, BrushNet scale 1.0; batches paint every image with its own generator."""

    family = "powerpaint"

    def _folders(self) -> tuple[Path, Path]:
        checkpoint, base = self.config.model("checkpoint"), self.config.model("base")
        if self.model_dir is not None:
            return Path(self.model_path(checkpoint)), Path(self.model_path(base))
        from huggingface_hub import snapshot_download

        require_weights(checkpoint.hub_id, hint="pass --model-dir DIR holding the weights")
        root = Path(snapshot_download(checkpoint.hub_id, revision=checkpoint.revision))
        return root, root / (base.subfolder or "")

    def _load(self) -> None:
        from generators.powerpaint.pipeline import load_powerpaint

        checkpoint, base = self._folders()
        self.pipe = load_powerpaint(checkpoint, base, torch_dtype=self.torch_dtype()).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    def _run(self, items: list[WorkItem]) -> list[Image.Image]:
        return self.pipe(
            prompt=[item.request.prompt for item in items],
            image=[item.image for item in items],
            mask_image=[item.mask_image for item in items],
            num_inference_steps=self.config.steps,
            guidance_scale=self.config.guidance,
            brushnet_conditioning_scale=self.config.extra("brushnet_conditioning_scale", 1.0),
            generator=[self.seeded_generator(item.request.seed) for item in items],
        ).images
