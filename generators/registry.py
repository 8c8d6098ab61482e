"""The explicit registry of distractor sources: the nine paper configurations, ``procedural`` and ``null``.

Hyperparameters follow the paper (appendix B.1); model ids default to the public checkpoints and are
replaced by ``--model-dir DIR/<local_name>`` folders (tests and the demo use tiny weights that way).
"""

from __future__ import annotations

from generators.config import LIGHTNING_SCHEDULER, SDXL_NEGATIVE_PROMPT, GeneratorConfig, ModelRef


FLUX_FILL = ModelRef("pipeline", "black-forest-labs/FLUX.1-Fill-dev", "flux-fill")
FLUX_CANNY = ModelRef("pipeline", "black-forest-labs/FLUX.1-Canny-dev", "flux-canny")
SDXL_INPAINT = ModelRef("pipeline", "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", "sdxl-inpaint")
QWEN_IMAGE = ModelRef("pipeline", "Qwen/Qwen-Image", "qwen-image")
QWEN_CONTROLNET = ModelRef("controlnet", "InstantX/Qwen-Image-ControlNet-Inpainting", "qwen-controlnet-inpaint")
QWEN_LIGHTNING = ModelRef(
    "lora",
    "lightx2v/Qwen-Image-Lightning",
    "qwen-lightning",
    weight_name="Qwen-Image-Lightning-8steps-V1.1.safetensors",
)
POWERPAINT = ModelRef("checkpoint", "JunhaoZhuang/PowerPaint_v2", "powerpaint")
POWERPAINT_BASE = ModelRef(
    "base", "JunhaoZhuang/PowerPaint_v2", "powerpaint-base", subfolder="realisticVisionV60B1_v51VAE"
)


def default_batch(resolution: int) -> int:
    """Images per pipeline call: 4 at 512 and 640, 2 at 1024, 1 at 1328. Set from weights plus activations to fit
    an 80 GB card in bf16, not yet measured on one (``benchmarks/gpu_generation.py`` prints the peak per batch)."""
    return 4 if resolution <= 640 else 2 if resolution <= 1024 else 1


def _flux_fill(resolution: int) -> GeneratorConfig:
    return GeneratorConfig(
        name=f"flux-fill-{resolution}",
        family="flux-fill",
        models=(FLUX_FILL,),
        resolution=resolution,
        batch_size=default_batch(resolution),
        steps=50,
        guidance=30.0,
        scheduler="FlowMatchEulerDiscrete (pipeline default, dynamic shift)",
        extras=(("max_sequence_length", 512),),
        description=f"FLUX.1-Fill [dev] at {resolution}px, 50 steps, guidance 30",
    )


def _flux_canny(resolution: int) -> GeneratorConfig:
    return GeneratorConfig(
        name=f"flux-canny-{resolution}",
        family="flux-canny",
        models=(FLUX_CANNY,),
        resolution=resolution,
        batch_size=default_batch(resolution),
        steps=28,
        guidance=7.0,
        strength=0.99,
        scheduler="FlowMatchEulerDiscrete (pipeline default, dynamic shift)",
        extras=(("canny_low", 50), ("canny_high", 200), ("max_sequence_length", 512)),
        description=f"FLUX.1-Canny [dev] inpainting at {resolution}px, 28 steps, guidance 7, Canny 50/200",
    )


def _sdxl(resolution: int) -> GeneratorConfig:
    return GeneratorConfig(
        name=f"sdxl-{resolution}",
        family="sdxl-inpaint",
        models=(SDXL_INPAINT,),
        resolution=resolution,
        batch_size=default_batch(resolution),
        size_multiple=8,
        steps=30,
        guidance=8.0,
        strength=0.99,
        negative_prompt=SDXL_NEGATIVE_PROMPT,
        scheduler="EulerDiscrete (repository default)",
        description=f"SDXL inpainting 0.1 at {resolution}px, 30 steps, CFG 8, strength 0.99",
    )


def _qwen(resolution: int) -> GeneratorConfig:
    return GeneratorConfig(
        name=f"qwen-{resolution}",
        family="qwen-inpaint",
        models=(QWEN_IMAGE, QWEN_CONTROLNET, QWEN_LIGHTNING),
        resolution=resolution,
        batch_size=default_batch(resolution),
        steps=8,
        guidance=1.0,  # Qwen-Image's true CFG scale; 1.0: one pass, no negative branch (Lightning)
        negative_prompt=" ",
        scheduler="FlowMatchEulerDiscrete, Lightning settings (shift 3)",
        extras=(
            ("controlnet_conditioning_scale", 1.0),
            ("lora_scale", 1.0),
            ("scheduler_config", tuple(sorted(LIGHTNING_SCHEDULER.items()))),
        ),
        description=f"Qwen-Image + InstantX inpainting ControlNet + Lightning 8-step V1.1 at {resolution}px",
    )


_CONFIGS: tuple[GeneratorConfig, ...] = (
    _flux_fill(512),
    _flux_fill(1024),
    _flux_canny(512),
    _flux_canny(1024),
    _sdxl(512),
    _sdxl(1024),
    _qwen(512),
    _qwen(1328),
    GeneratorConfig(
        name="powerpaint",
        family="powerpaint",
        models=(POWERPAINT, POWERPAINT_BASE),
        resolution=640,
        batch_size=default_batch(640),
        resize_mode="shortest-side",
        size_multiple=8,
        steps=45,
        guidance=7.5,
        scheduler="UniPCMultistep",
        extras=(("brushnet_conditioning_scale", 1.0),),  # the pipeline does object insertion (P_obj) only
        description="PowerPaint v2 (BrushNet on Realistic Vision V6.0), shortest side 640, 45 steps, CFG 7.5",
    ),
    GeneratorConfig(
        name="procedural",
        family="procedural",
        models=(),
        resolution=512,
        size_multiple=1,
        description="CPU, no weights: a different but similar synthetic object painted into the mask",
    ),
    GeneratorConfig(
        name="null",
        family="null",
        models=(),
        resolution=512,
        size_multiple=1,
        composite=False,
        description="returns its input: measures the data path alone (not a distractor source)",
    ),
)

CONFIGS: dict[str, GeneratorConfig] = {c.name: c for c in _CONFIGS}
"""Name -> configuration, in the paper's order."""
PAPER_CONFIGS: tuple[str, ...] = tuple(c.name for c in _CONFIGS[:9])


def get_config(name: str) -> GeneratorConfig:
    """The configuration called ``name``; an unknown name is an error listing the valid ones."""
    if name not in CONFIGS:
        raise ValueError(f"unknown generator configuration {name!r}; valid: {', '.join(CONFIGS)}")
    return CONFIGS[name]
