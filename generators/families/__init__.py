"""One generator class per family, and the explicit family registry."""

from __future__ import annotations

from pathlib import Path

from generators.base import Generator
from generators.config import GeneratorConfig
from generators.families.flux import FluxCannyGenerator, FluxFillGenerator
from generators.families.null import NullGenerator
from generators.families.powerpaint import PowerPaintGenerator
from generators.families.procedural import ProceduralGenerator
from generators.families.qwen import QwenInpaintGenerator
from generators.families.sdxl import SDXLInpaintGenerator


FAMILIES: dict[str, type[Generator]] = {
    "flux-fill": FluxFillGenerator,
    "flux-canny": FluxCannyGenerator,
    "sdxl-inpaint": SDXLInpaintGenerator,
    "qwen-inpaint": QwenInpaintGenerator,
    "powerpaint": PowerPaintGenerator,
    "procedural": ProceduralGenerator,
    "null": NullGenerator,
}


def build_generator(config: GeneratorConfig, model_dir: str | Path | None = None) -> Generator:
    """The generator of ``config``'s family, not yet loaded."""
    if config.family not in FAMILIES:
        raise ValueError(f"no generator for family {config.family!r}; valid: {', '.join(FAMILIES)}")
    return FAMILIES[config.family](config, model_dir)
