"""The generator protocol: one small class per family over the shared policy.

A family implements ``_load`` (build its pipeline with the real ``from_pretrained``) and ``_run``
(paint a batch of prepared views at the working size). Everything else, from input checks to the
512 output and QC scores, is shared here so that every family obeys the same policy.
"""

from __future__ import annotations

import functools
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from generators.config import GeneratorConfig, ModelRef
from generators.policy import (
    LANCZOS_RADIUS,
    composite,
    qc_scores,
    resize_pair,
    scaled_pixels,
    to_output,
    working_size,
)
from nearid.common.masks import inpaint_region
from nearid.common.weights import cached_snapshot, require_weights


logger = logging.getLogger(__name__)

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
DTYPES |= {"float16": "float16", "fp16": "float16"}
MIN_MASK_FRACTION = 0.001


class GeneratorInputError(ValueError):
    """A view cannot be inpainted; ``reason`` is the stable reject code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class InpaintRequest:
    """One view to receive a distractor: the view, its foreground mask, the prompt and the seed."""

    identity_id: int
    view: int
    image: Image.Image
    mask: np.ndarray
    prompt: str
    seed: int


@functools.cache
def resolved_revision(hub_id: str, revision: str | None) -> str:
    """The commit ``revision`` (default: main) of ``hub_id`` resolves to in the local Hugging Face cache, else the
    name asked for (nothing cached yet)."""
    snapshot = cached_snapshot(hub_id, revision)
    return snapshot.name if snapshot is not None else revision or "main"


@dataclass(frozen=True)
class WorkItem:
    """A request prepared for the model: image and mask at the working size."""

    request: InpaintRequest
    image: Image.Image
    mask: np.ndarray
    region: np.ndarray
    """The repainted region at the view's own size (holes and every significant part kept)."""

    @property
    def mask_image(self) -> Image.Image:
        return Image.fromarray(self.mask.astype(np.uint8) * 255, "L")


@dataclass(frozen=True)
class GeneratedImage:
    """A finished distractor, the model's raw output at the working size, and its cost and QC scores."""

    image: Image.Image
    raw: Image.Image
    seconds: float
    fg_change: float
    bg_change: float


class Generator(ABC):
    """Base of all generator families.

    Args:
        config: the configuration to run.
        model_dir: a folder holding one sub-folder per model (``ModelRef.local_name``); without it the
            public hub ids are loaded (from the local Hugging Face cache when offline).
    """

    family: ClassVar[str]
    batchable: ClassVar[bool] = True
    needs_torch: ClassVar[bool] = True
    forbidden_dtypes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: GeneratorConfig, model_dir: str | Path | None = None) -> None:
        if config.family != self.family:
            raise ValueError(f"{type(self).__name__} runs family {self.family!r}, not {config.family!r}")
        self.config = config
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.device = "cpu"
        self.dtype = "float32"
        self.loaded = False
        self.loads = 0
        """Times the models were loaded by this object (one per process that keeps it, by design)."""
        self.load_seconds = 0.0

    # -- models ---------------------------------------------------------------------------------

    def model_path(self, ref: ModelRef) -> str:
        """Where ``ref`` is loaded from: ``model_dir/<local_name>`` when given, else the hub id."""
        if self.model_dir is None:
            return ref.hub_id
        path = self.model_dir / ref.local_name
        if not path.exists():
            raise FileNotFoundError(f"{self.config.name}: {path} does not exist (stands in for {ref.hub_id})")
        return str(path)

    def model_provenance(self) -> tuple[list[str], list[str | None]]:
        """Model ids (hub id, or the local folder that replaced it) and the commit each hub model resolved to in
        the local cache (what was actually loaded), for the provenance columns."""
        ids, revisions = [], []
        for ref in self.config.models:
            local = self.model_dir is not None
            ids.append(f"{ref.hub_id} @ {self.model_path(ref)}" if local else ref.hub_id)
            revisions.append(None if local else resolved_revision(ref.hub_id, ref.revision))
        return ids, revisions

    def load(self, device: str = "cpu", dtype: str = "auto") -> None:
        """Load the models once; they stay resident for every batch after. ``auto``: bfloat16 on CUDA (every
        family runs in it; FLUX and Qwen need it), float32 elsewhere."""
        if dtype == "auto":
            dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        self.dtype = DTYPES[dtype]
        if self.dtype in self.forbidden_dtypes:
            raise ValueError(
                f"{self.config.name}: {self.dtype} is not supported by {self.family} (NaNs); use bfloat16"
            )
        self.device = device
        if self.needs_torch and not logger.isEnabledFor(logging.DEBUG):
            import diffusers.utils.logging
            import transformers.utils.logging

            diffusers.utils.logging.disable_progress_bar()  # loading bars; our shard and image bars remain
            transformers.utils.logging.disable_progress_bar()
        start = time.perf_counter()
        self._load()
        self.loaded = True
        self.loads += 1
        self.load_seconds += time.perf_counter() - start
        logger.info("%s loaded on %s (%s) in %.1fs", self.config.name, device, self.dtype, time.perf_counter() - start)

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)

    def seeded_generator(self, seed: int) -> Any:
        """A CPU ``torch.Generator``: the same noise on every device."""
        import torch

        return torch.Generator("cpu").manual_seed(seed)

    def seed_global(self, seed: int) -> None:
        """Seed the global RNGs, for pipelines that draw from them (Qwen's VAE sample, for one)."""
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)

    @abstractmethod
    def _load(self) -> None:
        """Build the pipeline from ``self.model_path(...)`` on ``self.device`` in ``self.torch_dtype()``."""

    @abstractmethod
    def _run(self, items: list[WorkItem]) -> list[Image.Image]:
        """Paint the masked region of each item (all of one working size); return images at that size."""

    # -- the shared policy ----------------------------------------------------------------------

    def check_inputs(self, request: InpaintRequest) -> None:
        """Refuse what no family can inpaint, with a reject code."""
        if not isinstance(request.image, Image.Image) or request.image.mode != "RGB":
            mode = getattr(request.image, "mode", type(request.image).__name__)
            raise GeneratorInputError("not-rgb", f"view {request.view} is {mode}, expected an RGB image")
        mask = np.asarray(request.mask)
        if mask.dtype != np.bool_ or mask.ndim != 2:
            raise GeneratorInputError("bad-mask", f"mask must be a 2-D bool array, got {mask.dtype} {mask.shape}")
        if mask.shape != (request.image.height, request.image.width):
            raise GeneratorInputError(
                "mask-size-mismatch",
                f"mask is {mask.shape[1]}x{mask.shape[0]}, view is {request.image.width}x{request.image.height}",
            )
        if mask.mean() < MIN_MASK_FRACTION:
            raise GeneratorInputError("mask-empty", f"mask of view {request.view} has no usable foreground")
        if not request.prompt.strip():
            raise GeneratorInputError("empty-prompt", "no description to prompt with")

    def prepare(self, request: InpaintRequest) -> WorkItem:
        """Clean the mask and resize both to the working size."""
        region = inpaint_region(request.mask)
        if not region.any():
            raise GeneratorInputError("mask-empty", f"mask of view {request.view} is empty after cleaning")
        size = working_size(self.config, request.image.width, request.image.height)
        image, work_mask = resize_pair(request.image, region, size)
        return WorkItem(request=request, image=image, mask=work_mask, region=region)

    def generate(self, requests: list[InpaintRequest]) -> list[GeneratedImage]:
        """Inpaint every request: checks, working size, model, compositing, 512 output, QC."""
        if self.needs_torch and not self.loaded:
            raise RuntimeError(f"{self.config.name}: call load() before generate()")
        for request in requests:
            self.check_inputs(request)
        items = [self.prepare(r) for r in requests]
        raws: dict[int, tuple[Image.Image, float]] = {}
        order = sorted(range(len(items)), key=lambda i: items[i].image.size)
        for _, group in groupby(order, key=lambda i: items[i].image.size):
            indices = list(group)
            chunks = [indices] if self.batchable else [[i] for i in indices]
            for chunk in chunks:
                start = time.perf_counter()
                images = self._run([items[i] for i in chunk])
                seconds = (time.perf_counter() - start) / len(chunk)
                if len(images) != len(chunk):
                    raise RuntimeError(f"{self.config.name}: {len(images)} images for {len(chunk)} requests")
                raws.update({i: (image, seconds) for i, image in zip(chunk, images, strict=True)})
        return [self._finish(item, *raws[i]) for i, item in enumerate(items)]

    def _finish(self, item: WorkItem, raw: Image.Image, seconds: float) -> GeneratedImage:
        raw = raw.convert("RGB")
        if raw.size != item.image.size:
            raw = raw.resize(item.image.size, Image.Resampling.LANCZOS)
        out_size, source = self.config.output_size, item.request.image
        output = to_output(raw, out_size)
        if self.config.composite:  # at the output size: outside the dilated region, the original's pixels exactly
            output = composite(output, to_output(source, out_size), item.region, self.config.composite_dilation)
        # what a change inside the region can reach in output pixels: the dilation, or without compositing the
        # spread of the two Lanczos resizes too
        reach = self.config.composite_dilation
        if not self.config.composite:
            reach += 2 * scaled_pixels(LANCZOS_RADIUS, min(item.image.size), out_size)
            reach += 2 * scaled_pixels(LANCZOS_RADIUS, min(source.size), out_size) + 1
        fg, bg = qc_scores(output, source, item.region, reach)
        return GeneratedImage(image=output, raw=raw, seconds=seconds, fg_change=fg, bg_change=bg)


class PipelineGenerator(Generator):
    """A family whose whole model is one diffusers pipeline folder (the ``pipeline`` model reference)."""

    pipeline_class: ClassVar[str]

    def _load(self) -> None:
        import diffusers

        ref = self.config.model("pipeline")
        pipeline = getattr(diffusers, self.pipeline_class)
        require_weights(self.model_path(ref), hint="pass --model-dir DIR holding the weights", recursive=True)
        self.pipe = pipeline.from_pretrained(
            self.model_path(ref), revision=ref.revision, dtype=self.torch_dtype(), use_safetensors=True
        )
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
