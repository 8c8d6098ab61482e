"""Tiny diffusers pipelines: built offline, saved, reloaded through ``from_pretrained``, same images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nearid.offline.tiny_pipelines import LIGHTNING_WEIGHT_NAME, PIPELINE_BUILDERS


SIZE = 32


@pytest.fixture(scope="module")
def inputs() -> dict:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (8, 8, 24, 24))
    other_mask = Image.new("L", (SIZE, SIZE), 0)
    other_mask.paste(255, (0, 0, 12, 12))
    return {"image": image, "mask": mask, "other_mask": other_mask}


def call(pipe, family: str, inputs: dict, mask_key: str = "mask") -> np.ndarray:
    """Two denoising steps with a seeded generator and a seeded global RNG (some pipelines draw from it)."""
    torch.manual_seed(0)
    kwargs = {
        "prompt": "a red striped disc",
        "height": SIZE,
        "width": SIZE,
        "num_inference_steps": 2,
        "generator": torch.Generator().manual_seed(0),
        "output_type": "np",
    }
    if family == "qwen-image":
        kwargs |= {"control_image": inputs["image"], "control_mask": inputs[mask_key], "true_cfg_scale": 1.0}
    else:
        kwargs |= {"image": inputs["image"], "mask_image": inputs[mask_key]}
    if family == "flux-canny":
        kwargs |= {"control_image": inputs["image"], "strength": 0.99}
    if family == "sdxl-inpaint":
        kwargs |= {"strength": 0.99, "negative_prompt": "text, watermark"}
    return pipe(**kwargs).images


def load(family: str, models_dir):
    import diffusers

    if family == "qwen-image":
        controlnet = diffusers.QwenImageControlNetModel.from_pretrained(models_dir / "qwen-controlnet-inpaint")
        return diffusers.QwenImageControlNetInpaintPipeline.from_pretrained(models_dir / family, controlnet=controlnet)
    return diffusers.DiffusionPipeline.from_pretrained(models_dir / family)


def in_memory(family: str):
    from diffusers import QwenImageControlNetInpaintPipeline

    from nearid.offline.tiny_pipelines import tiny_qwen_inpaint_controlnet

    seed = 100 * list(PIPELINE_BUILDERS).index(family)  # the seed save_tiny_pipelines used
    pipe = PIPELINE_BUILDERS[family][0](seed)
    if family == "qwen-image":
        pipe = QwenImageControlNetInpaintPipeline(**pipe.components, controlnet=tiny_qwen_inpaint_controlnet(50))
    return pipe


@pytest.mark.parametrize("family", sorted(PIPELINE_BUILDERS))
def test_round_trip_gives_identical_images(family: str, tiny_models_dir, inputs) -> None:
    loaded = load(family, tiny_models_dir)
    expected_class = {
        "flux-fill": "FluxFillPipeline",
        "flux-canny": "FluxControlInpaintPipeline",
        "sdxl-inpaint": "StableDiffusionXLInpaintPipeline",
        "qwen-image": "QwenImageControlNetInpaintPipeline",
    }[family]
    assert type(loaded).__name__ == expected_class
    out = call(loaded, family, inputs)
    assert out.shape == (1, SIZE, SIZE, 3) and np.isfinite(out).all()
    np.testing.assert_allclose(call(in_memory(family), family, inputs), out, atol=1e-5)
    np.testing.assert_array_equal(call(loaded, family, inputs), out)  # same seed, same image
    changed = call(loaded, family, inputs, mask_key="other_mask")
    assert np.abs(changed - out).max() > 1e-3  # the mask reaches the output


def test_lightning_lora_loads_fuses_and_unloads(tiny_models_dir, inputs) -> None:
    pipe = load("qwen-image", tiny_models_dir)
    before = call(pipe, "qwen-image", inputs)
    weight_before = pipe.transformer.transformer_blocks[0].attn.to_q.weight.detach().clone()
    pipe.load_lora_weights(tiny_models_dir / "qwen-lightning", weight_name=LIGHTNING_WEIGHT_NAME)
    assert any("lora" in name for name, _ in pipe.transformer.named_modules())
    pipe.fuse_lora(lora_scale=1.0)
    pipe.unload_lora_weights()
    assert not any("lora" in name for name, _ in pipe.transformer.named_modules())
    assert not torch.equal(pipe.transformer.transformer_blocks[0].attn.to_q.weight, weight_before)
    assert np.abs(call(pipe, "qwen-image", inputs) - before).max() > 1e-4
