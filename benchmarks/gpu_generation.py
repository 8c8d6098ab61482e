"""Generation at real size on one GPU: every family's denoiser, random weights, bf16, in one run of ~6 minutes.

Builds each family's published architecture directly on the GPU (FLUX.1 Fill / Canny transformer 11.9 B, the
SDXL inpainting UNet 2.57 B, Qwen-Image's transformer 20.4 B with the InstantX inpainting ControlNet, PowerPaint's
BrushNet branch with the SD1.5 UNet) and times the denoiser forward of one step at 512 and at the native working
size for a few batch sizes. Prints one JSON line per (family, size, batch): seconds per step, seconds per image at
the paper's step count (CFG families run both halves in the forward), peak GPU memory. Text encoders and VAEs run
once per image, not per step, and are left out. Weights do not change the timings, so random ones give the real
figures.

``--smoke`` runs the same code on the CPU with tiny configurations of the same classes, to check the script before
spending GPU time: python benchmarks/gpu_generation.py --smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402


TEXT_TOKENS = {"flux": 512, "qwen": 128, "clip": 77}


@dataclass(frozen=True)
class Family:
    """One configuration family: its sizes, its paper step count and how many halves its CFG runs."""

    name: str
    sizes: tuple[int, ...]
    steps: int
    cfg_halves: int
    build: Callable[[bool], dict]
    forward: Callable[[dict, int, int, torch.device, torch.dtype], None]


def _flux(in_channels: int) -> Callable[[bool], dict]:
    def build(smoke: bool) -> dict:
        from diffusers import FluxTransformer2DModel

        size = {"num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2}
        size |= {"joint_attention_dim": 32, "pooled_projection_dim": 16, "axes_dims_rope": (4, 6, 6)}
        real = {"num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24}
        real |= {"joint_attention_dim": 4096, "pooled_projection_dim": 768, "axes_dims_rope": (16, 56, 56)}
        config = (size if smoke else real) | {"in_channels": in_channels, "out_channels": 64, "guidance_embeds": True}
        return {"transformer": FluxTransformer2DModel(**config)}

    return build


def _flux_forward(models: dict, batch: int, side: int, device: torch.device, dtype: torch.dtype) -> None:
    model = models["transformer"]
    tokens, text = (side // 16) ** 2, TEXT_TOKENS["flux"]
    model(
        hidden_states=torch.randn(batch, tokens, model.config.in_channels, device=device, dtype=dtype),
        encoder_hidden_states=torch.randn(batch, text, model.config.joint_attention_dim, device=device, dtype=dtype),
        pooled_projections=torch.randn(batch, model.config.pooled_projection_dim, device=device, dtype=dtype),
        timestep=torch.full((batch,), 0.5, device=device, dtype=dtype),
        img_ids=torch.zeros(tokens, 3, device=device, dtype=dtype),
        txt_ids=torch.zeros(text, 3, device=device, dtype=dtype),
        guidance=torch.full((batch,), 3.5, device=device, dtype=dtype),
        return_dict=False,
    )


def _sdxl(smoke: bool) -> dict:
    from diffusers import UNet2DConditionModel

    if smoke:
        config = {"block_out_channels": (32, 64), "layers_per_block": 1, "transformer_layers_per_block": (1, 1)}
        config |= {
            "attention_head_dim": (2, 4),
            "cross_attention_dim": 32,
            "projection_class_embeddings_input_dim": 80,
        }
        config |= {"addition_time_embed_dim": 8, "norm_num_groups": 8}
        config |= {"down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D")}
        config |= {"up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")}
    else:
        config = {
            "block_out_channels": (320, 640, 1280),
            "layers_per_block": 2,
            "transformer_layers_per_block": (1, 2, 10),
        }
        config |= {"attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048}
        config |= {"projection_class_embeddings_input_dim": 2816, "addition_time_embed_dim": 256}
        config |= {"down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")}
        config |= {"up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")}
    config |= {"in_channels": 9, "out_channels": 4, "addition_embed_type": "text_time", "use_linear_projection": True}
    return {"unet": UNet2DConditionModel(**config)}


def _sdxl_forward(models: dict, batch: int, side: int, device: torch.device, dtype: torch.dtype) -> None:
    unet = models["unet"]
    pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    unet(
        torch.randn(batch, 9, side // 8, side // 8, device=device, dtype=dtype),
        torch.tensor(500, device=device),
        torch.randn(batch, TEXT_TOKENS["clip"], unet.config.cross_attention_dim, device=device, dtype=dtype),
        added_cond_kwargs={
            "text_embeds": torch.randn(batch, pooled, device=device, dtype=dtype),
            "time_ids": torch.randn(batch, 6, device=device, dtype=dtype),
        },
        return_dict=False,
    )


def _qwen(smoke: bool) -> dict:
    from diffusers import QwenImageControlNetModel, QwenImageTransformer2DModel

    size = {"attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32, "axes_dims_rope": (4, 6, 6)}
    if not smoke:
        size = {"attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 3584}
    transformer = QwenImageTransformer2DModel(num_layers=1 if smoke else 60, **size)
    controlnet = QwenImageControlNetModel(num_layers=1 if smoke else 6, extra_condition_channels=4, **size)
    return {"transformer": transformer, "controlnet": controlnet}


def _qwen_forward(models: dict, batch: int, side: int, device: torch.device, dtype: torch.dtype) -> None:
    transformer, controlnet = models["transformer"], models["controlnet"]
    grid, text = side // 16, TEXT_TOKENS["qwen"]
    common = {
        "hidden_states": torch.randn(batch, grid * grid, 64, device=device, dtype=dtype),
        "encoder_hidden_states": torch.randn(
            batch, text, transformer.config.joint_attention_dim, device=device, dtype=dtype
        ),
        "encoder_hidden_states_mask": torch.ones(batch, text, device=device, dtype=dtype),
        "timestep": torch.full((batch,), 0.5, device=device, dtype=dtype),
        "img_shapes": [(1, grid, grid)] * batch,
        "return_dict": False,
    }
    cond = torch.randn(batch, grid * grid, 64 + 4, device=device, dtype=dtype)
    samples = controlnet(controlnet_cond=cond, conditioning_scale=1.0, **common)
    transformer(controlnet_block_samples=samples[0] if isinstance(samples, tuple) else samples, **common)


def _powerpaint(smoke: bool) -> dict:
    from diffusers import UNet2DConditionModel

    from generators.powerpaint.brushnet import BrushNetModel

    if smoke:
        config = {
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
        }
        config |= {"norm_num_groups": 8, "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D")}
        config |= {"up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")}
    else:  # SD1.5 (Realistic Vision V6.0 is a fine-tune of it)
        config = {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "cross_attention_dim": 768}
        config |= {"attention_head_dim": 8}
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, **config)
    return {"unet": unet, "brushnet": BrushNetModel.from_unet_config(unet.config)}


def _powerpaint_forward(models: dict, batch: int, side: int, device: torch.device, dtype: torch.dtype) -> None:
    from generators.powerpaint.trunk import unet_forward_with_brushnet

    unet, brushnet = models["unet"], models["brushnet"]
    latents = torch.randn(batch, 4, side // 8, side // 8, device=device, dtype=dtype)
    text = torch.randn(batch, TEXT_TOKENS["clip"], unet.config.cross_attention_dim, device=device, dtype=dtype)
    cond = torch.randn(batch, 5, side // 8, side // 8, device=device, dtype=dtype)
    t = torch.tensor(500, device=device)
    residuals = brushnet(latents, t, encoder_hidden_states=text, brushnet_cond=cond, conditioning_scale=1.0)
    unet_forward_with_brushnet(unet, latents, t, text, *residuals)


FAMILIES = (
    Family("flux-fill", (512, 1024), 50, 1, _flux(384), _flux_forward),
    Family("flux-canny", (512, 1024), 28, 1, _flux(128), _flux_forward),
    Family("sdxl-inpaint", (512, 1024), 30, 2, _sdxl, _sdxl_forward),
    Family("qwen-inpaint", (512, 1328), 8, 1, _qwen, _qwen_forward),
    Family("powerpaint", (640,), 45, 2, _powerpaint, _powerpaint_forward),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny configurations on the CPU: check the script")
    parser.add_argument("--family", action="append", help="only these families (repeatable)")
    parser.add_argument("--batches", default="1,2,4", help="images per forward to try")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per point")
    args = parser.parse_args()
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # "modules that should be kept in float32: []", per model
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    if not args.smoke:
        torch.backends.cuda.matmul.allow_tf32 = True
    batches = [int(b) for b in args.batches.split(",")]
    for family in FAMILIES:
        if args.family and family.name not in args.family:
            continue
        start = time.perf_counter()
        with torch.device(device):
            models = {name: m.to(dtype).eval() for name, m in family.build(args.smoke).items()}
        params = sum(p.numel() for m in models.values() for p in m.parameters())
        built = time.perf_counter() - start
        for side in family.sizes if not args.smoke else (64,):
            for batch in batches:
                images = batch * family.cfg_halves  # a CFG family runs both halves in one forward
                try:
                    seconds, peak = _time(family, models, images, side, device, dtype, args.repeats)
                except torch.OutOfMemoryError:
                    print(json.dumps({"family": family.name, "side": side, "batch": batch, "oom": True}), flush=True)
                    torch.cuda.empty_cache()
                    break
                figure = {
                    "family": family.name,
                    "params_b": round(params / 1e9, 3),
                    "built_s": round(built, 1),
                    "side": side,
                    "batch": batch,
                    "s_per_step": round(seconds, 4),
                    "s_per_image": round(seconds * family.steps / batch, 3),
                    "steps": family.steps,
                    "peak_gib": round(peak / 2**30, 2),
                }
                print(json.dumps(figure), flush=True)
        del models
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _time(
    family: Family, models: dict, batch: int, side: int, device: torch.device, dtype: torch.dtype, repeats: int
) -> tuple[float, int]:
    """Seconds per forward (after one warm-up) and peak memory in bytes (0 on CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        family.forward(models, batch, side, device, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            family.forward(models, batch, side, device, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    return (time.perf_counter() - start) / repeats, peak


if __name__ == "__main__":
    main()
