"""BrushNet-CA, the PowerPaint v2 inpainting branch, on diffusers UNet blocks, and its strict loader.

The branch is a second copy of the SD1.5 UNet trunk (time embedding, down, mid and up blocks, cross-attention kept
so it can read PowerPaint's task prompt). Its first conv takes 9 channels: the noisy latents, the VAE latents of the
masked image and a mask that is 1 on known pixels. Every intermediate feature of the trunk goes through a
zero-initialised 1x1 conv and comes out as a residual: 12 down, 1 mid and 15 up at SD1.5 size, which
:func:`generators.powerpaint.trunk.unet_forward_with_brushnet` adds inside the base UNet. Attribute names equal the
key families of the published ``PowerPaint_Brushnet/diffusion_pytorch_model.safetensors``, which ships without a
config.json: the skeleton is built from the base UNet's config (``BrushNetModel.from_unet_config``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from generators.powerpaint.checkpoint import check_state_dict_keys
from generators.powerpaint.trunk import (
    BrushNetResiduals,
    Recorder,
    check_unet_config,
    embed_timestep,
    tap_channels,
    walk_trunk,
)


logger = logging.getLogger(__name__)

TRUNK_CONFIG_KEYS = (
    "in_channels",
    "flip_sin_to_cos",
    "freq_shift",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "only_cross_attention",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "attention_head_dim",
    "use_linear_projection",
    "upcast_attention",
    "resnet_time_scale_shift",
)
"""UNet config entries that shape the trunk; ``BrushNetModel.from_unet_config`` copies exactly these."""


def zero_conv(channels: int) -> nn.Conv2d:
    """A 1x1 conv initialised to zero, so a fresh branch adds nothing to the base UNet."""
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class BrushNetModel(ModelMixin, ConfigMixin):
    """BrushNet-CA: a UNet trunk (cross-attention kept) reading latents + masked-image latents + known-pixel mask.

    The trunk is built by ``UNet2DConditionModel`` itself and then taken apart, so it is key-for-key the base UNet's
    trunk for any supported config; ``from_unet`` and ``unet_forward_with_brushnet`` rely on that.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        conditioning_channels: int = 5,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        mid_block_type: str = "UNetMidBlock2DCrossAttn",
        up_block_types: tuple[str, ...] = (
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        only_cross_attention: bool | tuple[bool, ...] = False,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        transformer_layers_per_block: int | tuple[int, ...] = 1,
        attention_head_dim: int | tuple[int, ...] = 8,
        use_linear_projection: bool = False,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
    ) -> None:
        super().__init__()
        trunk_config = {key: self.config[key] for key in TRUNK_CONFIG_KEYS}  # registered before __init__ runs
        check_unet_config(trunk_config)
        trunk = UNet2DConditionModel(out_channels=in_channels, **trunk_config)

        self.conv_in_condition = nn.Conv2d(
            in_channels + conditioning_channels, block_out_channels[0], kernel_size=3, padding=1
        )
        self.time_proj = trunk.time_proj
        self.time_embedding = trunk.time_embedding
        self.down_blocks = trunk.down_blocks
        self.mid_block = trunk.mid_block
        self.up_blocks = trunk.up_blocks

        down_channels, mid_channels, up_channels = tap_channels(self, block_out_channels[0])
        self.brushnet_down_blocks = nn.ModuleList(zero_conv(c) for c in down_channels)
        self.brushnet_mid_block = zero_conv(mid_channels)
        self.brushnet_up_blocks = nn.ModuleList(zero_conv(c) for c in up_channels)

    @classmethod
    def from_unet_config(cls, unet_config: Mapping[str, Any]) -> BrushNetModel:
        """A randomly initialised branch shaped like the UNet described by ``unet_config`` (e.g. ``unet.config``)."""
        check_unet_config(unet_config)
        kwargs = {key: unet_config[key] for key in TRUNK_CONFIG_KEYS if key in unet_config}
        return cls(conditioning_channels=kwargs.get("in_channels", 4) + 1, **kwargs)

    @classmethod
    def from_unet(cls, unet: UNet2DConditionModel) -> BrushNetModel:
        """Initialise a branch from a base UNet, the way BrushNet training starts.

        The trunk is copied; ``conv_in_condition`` gets the UNet's conv_in weight on both the noisy-latent and the
        masked-image channels, zero on the mask channel and the conv_in bias; the output convs stay zero, so the
        branch starts as a no-op.
        """
        model = cls.from_unet_config(unet.config).to(device=unet.device)
        if unet.dtype != model.dtype:
            model = model.to(dtype=unet.dtype)
        for name in ("time_embedding", "down_blocks", "mid_block", "up_blocks"):
            getattr(model, name).load_state_dict(getattr(unet, name).state_dict())
        latent_channels = unet.conv_in.in_channels
        with torch.no_grad():
            weight = torch.zeros_like(model.conv_in_condition.weight)
            weight[:, :latent_channels] = unet.conv_in.weight
            weight[:, latent_channels : 2 * latent_channels] = unet.conv_in.weight
            model.conv_in_condition.weight.copy_(weight)
            model.conv_in_condition.bias.copy_(unet.conv_in.bias)
        return model

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        brushnet_cond: torch.Tensor,
        conditioning_scale: float = 1.0,
    ) -> BrushNetResiduals:
        """Residuals for the base UNet from noisy ``sample`` and ``brushnet_cond`` = [masked-image latents, mask].

        The branch's up path consumes the branch's own skips; every residual is multiplied by
        ``conditioning_scale``.
        """
        expected = self.config.conditioning_channels
        if brushnet_cond.shape[1] != expected or brushnet_cond.shape[-2:] != sample.shape[-2:]:
            raise ValueError(
                f"brushnet_cond must have {expected} channels (masked-image latents + mask) and the latent size "
                f"{tuple(sample.shape[-2:])}, got shape {tuple(brushnet_cond.shape)}"
            )
        temb = embed_timestep(self.time_proj, self.time_embedding, sample, timestep)
        hidden = self.conv_in_condition(torch.cat([sample, brushnet_cond], dim=1))
        features = Recorder()
        walk_trunk(self, hidden, temb, encoder_hidden_states, features)
        down = [
            conv(feature) * conditioning_scale
            for conv, feature in zip(self.brushnet_down_blocks, features.downs, strict=True)
        ]
        mid = self.brushnet_mid_block(features.mids[0]) * conditioning_scale
        up = [
            conv(feature) * conditioning_scale
            for conv, feature in zip(self.brushnet_up_blocks, features.ups, strict=True)
        ]
        return BrushNetResiduals(down, mid, up)


def load_brushnet(
    checkpoint_file: str | Path, unet_config: Mapping[str, Any], dtype: torch.dtype = torch.float32
) -> BrushNetModel:
    """Build the branch skeleton from the base UNet's config and load ``diffusion_pytorch_model.safetensors`` into it.

    The skeleton is built on the meta device and the file's tensors are assigned to it, so the 3.5 GB checkpoint is
    held in memory once. Keys and shapes are checked first; any mismatch raises ``ValueError`` naming the keys.
    """
    from safetensors import safe_open

    checkpoint_file = Path(checkpoint_file)
    if checkpoint_file.suffix != ".safetensors":
        raise ValueError(f"nearid loads safetensors only, got {checkpoint_file}")
    with torch.device("meta"):
        model = BrushNetModel.from_unet_config(unet_config)
    expected = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    with safe_open(str(checkpoint_file), framework="pt") as handle:
        found = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        check_state_dict_keys(expected, found, f"BrushNet checkpoint {checkpoint_file}")
        state = {key: handle.get_tensor(key).to(dtype) for key in found}
    model.load_state_dict(state, strict=True, assign=True)
    leftovers = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if leftovers:
        raise RuntimeError(f"BrushNet tensors left uninitialised after loading: {leftovers[:5]}")
    logger.info("loaded BrushNet from %s (%d tensors, %s)", checkpoint_file, len(state), dtype)
    return model.eval()
