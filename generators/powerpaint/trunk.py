"""Walking an SD1.5 UNet trunk layer by layer, with a tap at every point where BrushNet reads a feature (the branch
side) or adds a residual (the base UNet side).

Unlike ControlNet, BrushNet's residuals are added *inside* the base UNet blocks (after each resnet/attention pair,
each down/upsampler and the mid block), so diffusers' ``UNet2DConditionModel.forward`` cannot take them;
``unet_forward_with_brushnet`` walks the UNet block by block instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from diffusers import UNet2DConditionModel
from torch import nn


DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn",)
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")

UNSUPPORTED_UNET_SETTINGS: dict[str, Any] = {
    "center_input_sample": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "addition_embed_type": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "time_cond_proj_dim": None,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "conv_in_kernel": 3,
    "dual_cross_attention": False,
    "attention_type": "default",
    "num_attention_heads": None,
    "reverse_transformer_layers_per_block": None,
}
"""UNet config entries the block walk does not reproduce, with the only value it accepts (the SD1.5 one)."""


class BrushNetResiduals(NamedTuple):
    """The branch output, already multiplied by the conditioning scale; unpacks as ``down, mid, up``."""

    down: list[torch.Tensor]
    mid: torch.Tensor
    up: list[torch.Tensor]


def check_unet_config(unet_config: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming every setting of a UNet config that the BrushNet block walk cannot reproduce."""
    problems = [
        f"{key}={unet_config[key]!r} (only {allowed!r} is supported)"
        for key, allowed in UNSUPPORTED_UNET_SETTINGS.items()
        if unet_config.get(key, allowed) != allowed
    ]
    for key, allowed in (("down_block_types", DOWN_BLOCK_TYPES), ("up_block_types", UP_BLOCK_TYPES)):
        problems += [
            f"{key} contains {name!r} (supported: {allowed})"
            for name in unet_config.get(key, ())
            if name not in allowed
        ]
    mid = unet_config.get("mid_block_type", MID_BLOCK_TYPES[0])
    if mid not in MID_BLOCK_TYPES:
        problems.append(f"mid_block_type={mid!r} (supported: {MID_BLOCK_TYPES})")
    if problems:
        raise ValueError("UNet config is not SD1.5-like, BrushNet cannot be used with it: " + "; ".join(problems))


def embed_timestep(
    time_proj: nn.Module, time_embedding: nn.Module, sample: torch.Tensor, timestep: torch.Tensor | float | int
) -> torch.Tensor:
    """Sinusoidal projection plus MLP of the timestep, broadcast to the batch (as ``UNet2DConditionModel`` does)."""
    if not torch.is_tensor(timestep):
        dtype = torch.float64 if isinstance(timestep, float) else torch.int64
        timestep = torch.tensor([timestep], dtype=dtype, device=sample.device)
    elif timestep.ndim == 0:
        timestep = timestep[None].to(sample.device)
    projected = time_proj(timestep.expand(sample.shape[0]))
    return time_embedding(projected.to(dtype=sample.dtype), None)


class Tap:
    """Visited at every point where the branch reads a feature or the base UNet receives a residual."""

    def down(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def mid(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def up(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


class Recorder(Tap):
    """Keeps every tapped feature and passes it on unchanged (the branch side)."""

    def __init__(self) -> None:
        self.downs: list[torch.Tensor] = []
        self.mids: list[torch.Tensor] = []
        self.ups: list[torch.Tensor] = []

    def down(self, hidden: torch.Tensor) -> torch.Tensor:
        self.downs.append(hidden)
        return hidden

    def mid(self, hidden: torch.Tensor) -> torch.Tensor:
        self.mids.append(hidden)
        return hidden

    def up(self, hidden: torch.Tensor) -> torch.Tensor:
        self.ups.append(hidden)
        return hidden


class Injector(Tap):
    """Adds the next residual at every tap point (the base UNet side)."""

    def __init__(self, residuals: BrushNetResiduals) -> None:
        self._downs = iter(residuals.down)
        self._mid = residuals.mid
        self._ups = iter(residuals.up)

    def down(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + next(self._downs)

    def mid(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self._mid

    def up(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + next(self._ups)


def count_taps(net: nn.Module) -> tuple[int, int]:
    """Number of down and up tap points of a trunk: conv_in + every resnet(+attention) and down/upsampler."""
    downs = 1 + sum(len(block.resnets) + (block.downsamplers is not None) for block in net.down_blocks)
    ups = sum(len(block.resnets) + (block.upsamplers is not None) for block in net.up_blocks)
    return downs, ups


def walk_trunk(
    net: nn.Module, hidden: torch.Tensor, temb: torch.Tensor, context: torch.Tensor, tap: Tap
) -> torch.Tensor:
    """Run ``net``'s down, mid and up blocks layer by layer from the conv_in output, calling ``tap`` at each feature.

    This is the block arithmetic of ``UNet2DConditionModel.forward`` spelled out, so that a tap can change the
    hidden state between layers. The conv_in output is stored as the first skip *before* it is tapped; every other
    skip is stored after its tap.
    """
    num_upsamplers = sum(block.upsamplers is not None for block in net.up_blocks)
    pass_sizes = any(size % 2**num_upsamplers for size in hidden.shape[-2:])

    skips = [hidden]
    hidden = tap.down(hidden)
    for block in net.down_blocks:
        attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
        for resnet, attention in zip(block.resnets, attentions, strict=True):
            hidden = resnet(hidden, temb)
            if attention is not None:
                hidden = attention(hidden, encoder_hidden_states=context, return_dict=False)[0]
            hidden = tap.down(hidden)
            skips.append(hidden)
        if block.downsamplers is not None:
            for downsampler in block.downsamplers:
                hidden = downsampler(hidden)
            hidden = tap.down(hidden)
            skips.append(hidden)

    mid = net.mid_block
    hidden = mid.resnets[0](hidden, temb)
    for attention, resnet in zip(mid.attentions, mid.resnets[1:], strict=True):
        hidden = attention(hidden, encoder_hidden_states=context, return_dict=False)[0]
        hidden = resnet(hidden, temb)
    hidden = tap.mid(hidden)

    for index, block in enumerate(net.up_blocks):
        block_skips = skips[-len(block.resnets) :]
        skips = skips[: -len(block.resnets)]
        is_last = index == len(net.up_blocks) - 1
        output_size = skips[-1].shape[2:] if pass_sizes and not is_last else None
        attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
        for resnet, attention in zip(block.resnets, attentions, strict=True):
            hidden = torch.cat([hidden, block_skips.pop()], dim=1)
            hidden = resnet(hidden, temb)
            if attention is not None:
                hidden = attention(hidden, encoder_hidden_states=context, return_dict=False)[0]
            hidden = tap.up(hidden)
        if block.upsamplers is not None:
            for upsampler in block.upsamplers:
                hidden = upsampler(hidden, output_size)
            hidden = tap.up(hidden)
    return hidden


def tap_channels(net: nn.Module, first_channels: int) -> tuple[list[int], int, list[int]]:
    """Channel count of the feature at every down, mid and up tap point of a trunk."""
    downs = [first_channels]
    for block in net.down_blocks:
        downs += [resnet.out_channels for resnet in block.resnets]
        if block.downsamplers is not None:
            downs.append(block.downsamplers[-1].out_channels)
    ups: list[int] = []
    for block in net.up_blocks:
        ups += [resnet.out_channels for resnet in block.resnets]
        if block.upsamplers is not None:
            ups.append(block.upsamplers[-1].out_channels)
    return downs, net.mid_block.resnets[-1].out_channels, ups


# -- the base UNet with residuals -----------------------------------------------------------------


def unet_forward_with_brushnet(
    unet: UNet2DConditionModel,
    sample: torch.Tensor,
    timestep: torch.Tensor | float | int,
    encoder_hidden_states: torch.Tensor,
    down_residuals: list[torch.Tensor] | None = None,
    mid_residual: torch.Tensor | None = None,
    up_residuals: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The base UNet's noise prediction with BrushNet residuals added inside its blocks.

    The first down residual goes onto the conv_in output after that output was kept as the first skip; the others
    are added after every resnet(+attention) pair, downsampler, the mid block, and every up pair and upsampler.
    With no residuals (all three ``None``) or all-zero residuals this equals ``unet(...).sample`` exactly.
    """
    check_unet_config(unet.config)
    given = [residual is not None for residual in (down_residuals, mid_residual, up_residuals)]
    if any(given) and not all(given):
        raise ValueError("pass all of down_residuals, mid_residual and up_residuals, or none of them")
    tap: Tap = Tap()
    if all(given):
        n_down, n_up = count_taps(unet)
        if len(down_residuals) != n_down or len(up_residuals) != n_up:
            raise ValueError(
                f"the UNet takes {n_down} down and {n_up} up residuals, got {len(down_residuals)} and "
                f"{len(up_residuals)}: was the BrushNet built for a different UNet config?"
            )
        tap = Injector(BrushNetResiduals(list(down_residuals), mid_residual, list(up_residuals)))

    temb = embed_timestep(unet.time_proj, unet.time_embedding, sample, timestep)
    hidden = walk_trunk(unet, unet.conv_in(sample), temb, encoder_hidden_states, tap)
    if unet.conv_norm_out is not None:
        hidden = unet.conv_act(unet.conv_norm_out(hidden))
    return unet.conv_out(hidden)
