"""PowerPaint v2 / BrushNet: block-walk parity with the UNet, the published key layout, strict loaders, and the tiny
pipeline end to end (loaded from disk through ``load_powerpaint``)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from safetensors.torch import load_file, save_file

from generators.powerpaint.brushnet import BrushNetModel, load_brushnet
from generators.powerpaint.checkpoint import BRUSHNET_FOLDER, BRUSHNET_WEIGHTS
from generators.powerpaint.pipeline import PowerPaintPipeline, load_powerpaint, prepare_mask_and_masked_image
from generators.powerpaint.text_encoder import (
    TASK_TOKENS,
    add_task_tokens,
    expand_task_tokens,
    load_brushnet_text_encoder,
)
from generators.powerpaint.trunk import unet_forward_with_brushnet
from nearid.offline.tiny_components import tiny_clip_tokenizer
from nearid.offline.tiny_powerpaint import (
    BASE_FOLDER,
    CHECKPOINT_FOLDER,
    MODEL_IDS,
    TEXT_ENCODER_WEIGHTS,
    save_tiny_powerpaint,
    tiny_brushnet,
    tiny_powerpaint_base,
)


SIZE = 64
SD15_UNET_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
"""The architecture entries of SD1.5's (and Realistic Vision V6.0's) ``unet/config.json``."""


@pytest.fixture(scope="module")
def base() -> StableDiffusionPipeline:
    return tiny_powerpaint_base(0)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-powerpaint")
    assert save_tiny_powerpaint(out) == MODEL_IDS
    return out


@pytest.fixture(scope="module")
def pipe(saved: Path) -> PowerPaintPipeline:
    pipeline = load_powerpaint(saved / CHECKPOINT_FOLDER, saved / BASE_FOLDER)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    other_mask = Image.new("L", (SIZE, SIZE), 0)
    other_mask.paste(255, (0, 0, 24, 24))
    image = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    return {"image": image, "mask": mask, "other_mask": other_mask}


def unet_inputs(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(CFG-sized noisy latents, timestep, text states) for the tiny UNet."""
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 4, height, width, generator=generator)
    context = torch.randn(2, 7, 32, generator=generator)
    return sample, torch.tensor(501), context


def branch_cond(sample: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Random stand-in for [masked-image latents, mask] at the latent size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(sample.shape[0], 5, *sample.shape[-2:], generator=generator)


# -- block walk -----------------------------------------------------------------------------------


@pytest.mark.parametrize("latent_size", [(8, 8), (9, 10)])  # (9, 10) needs the upsamplers' output_size
@torch.no_grad()
def test_walker_with_zero_residuals_equals_unet_exactly(
    base: StableDiffusionPipeline, latent_size: tuple[int, int]
) -> None:
    sample, t, context = unet_inputs(*latent_size)
    reference = base.unet(sample, t, context).sample
    assert (unet_forward_with_brushnet(base.unet, sample, t, context) - reference).abs().max().item() == 0.0
    fresh = BrushNetModel.from_unet(base.unet)  # output convs start at zero: all residuals are zero
    residuals = fresh(sample, t, context, branch_cond(sample))
    assert all(not r.any() for r in [*residuals.down, residuals.mid, *residuals.up])
    injected = unet_forward_with_brushnet(base.unet, sample, t, context, *residuals)
    assert (injected - reference).abs().max().item() == 0.0


@torch.no_grad()
def test_scale_zero_leaves_unet_unchanged_and_residuals_change_it(base: StableDiffusionPipeline) -> None:
    sample, t, context = unet_inputs(8, 8)
    cond = branch_cond(sample)
    reference = base.unet(sample, t, context).sample
    brushnet = tiny_brushnet(base.unet, seed=3)
    silent = brushnet(sample, t, context, cond, conditioning_scale=0.0)
    assert (unet_forward_with_brushnet(base.unet, sample, t, context, *silent) - reference).abs().max().item() == 0.0
    active = brushnet(sample, t, context, cond, conditioning_scale=1.0)
    assert (unet_forward_with_brushnet(base.unet, sample, t, context, *active) - reference).abs().max() > 1e-3
    doubled = brushnet(sample, t, context, cond, conditioning_scale=2.0)
    torch.testing.assert_close(doubled.mid, 2 * active.mid)


@torch.no_grad()
def test_first_residual_skips_the_first_skip(base: StableDiffusionPipeline) -> None:
    """The conv_in residual reaches the first down resnet but not the skip that the last up resnet consumes."""
    sample, t, context = unet_inputs(8, 8)
    residuals = BrushNetModel.from_unet(base.unet)(sample, t, context, branch_cond(sample))
    residuals.down[0] = torch.full_like(residuals.down[0], 0.5)
    seen: dict[str, torch.Tensor] = {}

    def keep_input(name: str) -> Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[name] = args[0]

        return hook

    hooks = [
        base.unet.down_blocks[0].resnets[0].register_forward_pre_hook(keep_input("down")),
        base.unet.up_blocks[-1].resnets[-1].register_forward_pre_hook(keep_input("up")),
    ]
    try:
        unet_forward_with_brushnet(base.unet, sample, t, context, *residuals)
    finally:
        for hook in hooks:
            hook.remove()
    conv_in = base.unet.conv_in(sample)
    assert torch.equal(seen["down"], conv_in + 0.5)
    assert torch.equal(seen["up"][:, -conv_in.shape[1] :], conv_in)


@torch.no_grad()
def test_branch_outputs_and_from_unet_initialisation(base: StableDiffusionPipeline) -> None:
    unet = base.unet
    brushnet = BrushNetModel.from_unet(unet)
    weight = brushnet.conv_in_condition.weight
    assert weight.shape[1] == 9
    assert torch.equal(weight[:, :4], unet.conv_in.weight) and torch.equal(weight[:, 4:8], unet.conv_in.weight)
    assert not weight[:, 8].any() and torch.equal(brushnet.conv_in_condition.bias, unet.conv_in.bias)
    for name in ("time_embedding", "down_blocks", "mid_block", "up_blocks"):
        for key, tensor in getattr(unet, name).state_dict().items():
            assert torch.equal(getattr(brushnet, name).state_dict()[key], tensor), f"{name}.{key}"
    zero_convs = [*brushnet.brushnet_down_blocks, brushnet.brushnet_mid_block, *brushnet.brushnet_up_blocks]
    assert all(not param.any() for conv in zero_convs for param in conv.parameters())

    sample, t, context = unet_inputs(8, 8)
    down, mid, up = brushnet(sample, t, context, branch_cond(sample))
    assert [r.shape[1:] for r in down] == [(32, 8, 8), (32, 8, 8), (32, 4, 4), (64, 4, 4)]
    assert mid.shape[1:] == (64, 4, 4)
    assert [r.shape[1:] for r in up] == [(64, 4, 4), (64, 4, 4), (64, 8, 8), (32, 8, 8), (32, 8, 8)]
    with pytest.raises(ValueError, match="5 channels"):
        brushnet(sample, t, context, branch_cond(sample)[:, :4])


def test_sd15_branch_has_the_published_key_layout() -> None:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        brushnet = BrushNetModel.from_unet_config(SD15_UNET_CONFIG)
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    keys = set(brushnet.state_dict())
    assert len(keys) == 738
    assert sum(param.numel() for param in brushnet.parameters()) == 886_069_440
    assert {key.split(".")[0] for key in keys} == {
        "conv_in_condition",
        "time_embedding",
        "down_blocks",
        "mid_block",
        "up_blocks",
        "brushnet_down_blocks",
        "brushnet_mid_block",
        "brushnet_up_blocks",
    }
    assert [conv.in_channels for conv in brushnet.brushnet_down_blocks] == [320] * 4 + [640] * 3 + [1280] * 5
    assert brushnet.brushnet_mid_block.in_channels == 1280
    assert [conv.in_channels for conv in brushnet.brushnet_up_blocks] == [1280] * 8 + [640] * 4 + [320] * 3
    zero_conv_keys = {key for key in keys if key.startswith("brushnet_")}
    assert len(zero_conv_keys) == 2 * (12 + 1 + 15)
    assert brushnet.conv_in_condition.weight.shape == (320, 9, 3, 3)
    trunk = keys - zero_conv_keys - {"conv_in_condition.weight", "conv_in_condition.bias"}
    unet_trunk = {key for key in unet.state_dict() if not key.startswith(("conv_in.", "conv_out.", "conv_norm_out."))}
    assert trunk == unet_trunk


# -- loaders --------------------------------------------------------------------------------------


@torch.no_grad()
def test_load_brushnet_round_trip(saved: Path, base: StableDiffusionPipeline) -> None:
    loaded = load_brushnet(saved / CHECKPOINT_FOLDER / BRUSHNET_FOLDER / BRUSHNET_WEIGHTS, base.unet.config)
    expected = tiny_brushnet(base.unet, seed=10)  # the seed save_tiny_powerpaint used
    assert not loaded.training
    for key, tensor in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


@pytest.mark.parametrize("change", ["missing", "renamed", "reshaped"])
def test_load_brushnet_refuses_a_mismatched_checkpoint(
    saved: Path, base: StableDiffusionPipeline, tmp_path: Path, change: str
) -> None:
    state = load_file(saved / CHECKPOINT_FOLDER / BRUSHNET_FOLDER / BRUSHNET_WEIGHTS)
    key = "up_blocks.1.attentions.0.proj_in.weight"
    if change == "missing":
        del state[key]
        names = [key]
    elif change == "renamed":
        state["up_blocks.1.attention.0.proj_in.weight"] = state.pop(key)
        names = [key, "up_blocks.1.attention.0.proj_in.weight"]
    else:
        state[key] = torch.zeros(3, 3)
        names = [key, "[3, 3]"]
    save_file(state, tmp_path / BRUSHNET_WEIGHTS)
    with pytest.raises(ValueError, match="BrushNet checkpoint") as error:
        load_brushnet(tmp_path / BRUSHNET_WEIGHTS, base.unet.config)
    assert all(name in str(error.value) for name in names), str(error.value)


def test_text_encoder_loader_maps_the_task_tokens(saved: Path, base: StableDiffusionPipeline, tmp_path: Path) -> None:
    file = saved / CHECKPOINT_FOLDER / BRUSHNET_FOLDER / TEXT_ENCODER_WEIGHTS
    tokenizer = add_task_tokens(tiny_clip_tokenizer())
    model = load_brushnet_text_encoder(file, base.text_encoder.config, tokenizer)
    state = load_file(file)
    table = model.get_input_embeddings().weight
    vocab = len(base.tokenizer)
    assert table.shape == (vocab + 30, 32)
    assert torch.equal(table[:vocab], state["text_model.embeddings.token_embedding.wrapped.weight"])
    assert tokenizer.convert_tokens_to_ids(list(TASK_TOKENS)) == list(range(vocab, vocab + 30))
    for offset, name in enumerate(["P_ctxt", "P_shape", "P_obj"]):
        rows = table[vocab + 10 * offset : vocab + 10 * (offset + 1)]
        assert torch.equal(rows, state[f"text_model.embeddings.token_embedding.trainable_embeddings.{name}"])
    assert expand_task_tokens(" P_obj") == " " + " ".join(f"P_obj_{i}" for i in range(10))
    ids = tokenizer(expand_task_tokens(" P_obj")).input_ids
    assert ids[1:-1] == list(range(vocab + 20, vocab + 30))

    del state["text_model.encoder.layers.1.mlp.fc2.bias"]
    save_file(state, tmp_path / "broken.safetensors")
    with pytest.raises(ValueError, match=re.escape("encoder.layers.1.mlp.fc2.bias")):
        load_brushnet_text_encoder(tmp_path / "broken.safetensors", base.text_encoder.config, tokenizer)


@pytest.mark.parametrize(
    ("folder", "weights", "pickle_name"),
    [
        (f"{CHECKPOINT_FOLDER}/{BRUSHNET_FOLDER}", TEXT_ENCODER_WEIGHTS, "pytorch_model.bin"),
        (f"{BASE_FOLDER}/unet", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ],
)
def test_pickle_only_weights_are_refused(
    saved: Path, tmp_path: Path, folder: str, weights: str, pickle_name: str
) -> None:
    shutil.copytree(saved, tmp_path / "models")
    (tmp_path / "models" / folder / weights).unlink()
    (tmp_path / "models" / folder / pickle_name).write_bytes(b"never read")
    with pytest.raises(FileNotFoundError, match="nearid loads safetensors only"):
        load_powerpaint(tmp_path / "models" / CHECKPOINT_FOLDER, tmp_path / "models" / BASE_FOLDER)


# -- pipeline -------------------------------------------------------------------------------------


def paint(
    pipe: PowerPaintPipeline, images: dict[str, Image.Image], mask: str = "mask", seed: int = 0, global_seed: int = 0
) -> np.ndarray:
    """Two steps at 64 px; ``global_seed`` reseeds torch's global RNG, which must not matter."""
    torch.manual_seed(global_seed)
    output = pipe(
        "a red striped ball",
        images["image"],
        images[mask],
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
    )
    return np.asarray(output.images[0], dtype=np.float32)


def test_pipeline_is_deterministic_and_mask_driven(pipe: PowerPaintPipeline, images: dict[str, Image.Image]) -> None:
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    first = paint(pipe, images)
    assert first.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(paint(pipe, images, global_seed=123), first)  # the generator alone decides
    assert np.abs(paint(pipe, images, mask="other_mask") - first).max() > 1.0
    assert np.abs(paint(pipe, images, seed=1) - first).max() > 1.0


def test_mask_convention(pipe: PowerPaintPipeline, images: dict[str, Image.Image]) -> None:
    masked, hole = prepare_mask_and_masked_image(images["image"], images["mask"])
    inside = hole[0, 0].bool()
    assert inside.sum() == 32 * 32
    assert (masked[:, :, inside] == -1).all()
    pixels = torch.from_numpy(np.asarray(images["image"], dtype=np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(masked[0][:, ~inside], pixels[:, ~inside] * 2 - 1)
    conditioning = pipe.prepare_conditioning(images["image"], images["mask"], torch.Generator().manual_seed(0))
    known = torch.ones(8, 8)
    known[2:6, 2:6] = 0
    assert conditioning.shape == (1, 5, 8, 8)
    assert torch.equal(conditioning[0, 4], known)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("empty_mask", "mask_image is empty"),
        ("size_mismatch", "differ"),
        ("not_rgb", "must be RGB"),
        ("not_multiple_of_8", "multiple of 8"),
    ],
)
def test_bad_inputs_raise(pipe: PowerPaintPipeline, images: dict[str, Image.Image], change: str, message: str) -> None:
    image, mask = images["image"], images["mask"]
    if change == "empty_mask":
        mask = Image.new("L", mask.size, 0)
    elif change == "size_mismatch":
        mask = mask.resize((SIZE, SIZE + 8))
    elif change == "not_rgb":
        image = image.convert("RGBA")
    else:
        image, mask = image.resize((60, 60)), mask.resize((60, 60))
    with pytest.raises(ValueError, match=message):
        pipe("a ball", image, mask, num_inference_steps=1)
