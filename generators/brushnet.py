"""BrushNet-CA, the PowerPaint v2 inpainting branch, on diffusers UNet blocks, plus a UNet forward that injects it.

The branch is a second copy of the SD1.5 UNet trunk (time embedding, down, mid and up blocks, cross-attention kept
so it can read PowerPaint's task prompt). Its first conv takes 9 channels: the noisy latents, the VAE latents of the
masked image and a mask that is 1 on known pixels. Every intermediate feature of the trunk goes through a
zero-initialised 1x1 conv and comes out as a residual: 12 down, 1 mid and 15 up at SD1.5 size.

Unlike ControlNet, the residuals are added *inside* the base UNet blocks (after each resnet/attention pair, each
down/upsampler and the mid block), so diffusers' ``UNet2DConditionModel.forward`` cannot take them;
``unet_forward_with_brushnet`` walks the UNet block by block instead. Attribute names equal the key families of the
published ``PowerPaint_Brushnet/diffusion_pytorch_model.safetensors``, which ships without a config.json: the
skeleton is built from the base UNet's config (``BrushNetModel.from_unet_config``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


logger = logging.getLogger(__name__)

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn",)
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")

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


# -- walking the trunk ----------------------------------------------------------------------------


class _Tap:
    """Visited at every point where the branch reads a feature or the base UNet receives a residual."""

    def down(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def mid(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def up(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


class _Recorder(_Tap):
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


class _Injector(_Tap):
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


def _walk_trunk(
    net: nn.Module, hidden: torch.Tensor, temb: torch.Tensor, context: torch.Tensor, tap: _Tap
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


def _tap_channels(net: nn.Module, first_channels: int) -> tuple[list[int], int, list[int]]:
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


def _zero_conv(channels: int) -> nn.Conv2d:
    """A 1x1 conv initialised to zero, so a fresh branch adds nothing to the base UNet."""
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


# -- the branch -----------------------------------------------------------------------------------


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

        down_channels, mid_channels, up_channels = _tap_channels(self, block_out_channels[0])
        self.brushnet_down_blocks = nn.ModuleList(_zero_conv(c) for c in down_channels)
        self.brushnet_mid_block = _zero_conv(mid_channels)
        self.brushnet_up_blocks = nn.ModuleList(_zero_conv(c) for c in up_channels)

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
        features = _Recorder()
        _walk_trunk(self, hidden, temb, encoder_hidden_states, features)
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
    tap: _Tap = _Tap()
    if all(given):
        n_down, n_up = count_taps(unet)
        if len(down_residuals) != n_down or len(up_residuals) != n_up:
            raise ValueError(
                f"the UNet takes {n_down} down and {n_up} up residuals, got {len(down_residuals)} and "
                f"{len(up_residuals)}: was the BrushNet built for a different UNet config?"
            )
        tap = _Injector(BrushNetResiduals(list(down_residuals), mid_residual, list(up_residuals)))

    temb = embed_timestep(unet.time_proj, unet.time_embedding, sample, timestep)
    hidden = _walk_trunk(unet, unet.conv_in(sample), temb, encoder_hidden_states, tap)
    if unet.conv_norm_out is not None:
        hidden = unet.conv_act(unet.conv_norm_out(hidden))
    return unet.conv_out(hidden)


# -- loading --------------------------------------------------------------------------------------


def _describe(keys: set[str], limit: int = 5) -> str:
    """``count (first few, ...)`` for an error message."""
    shown = ", ".join(sorted(keys)[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def check_state_dict_keys(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], what: str
) -> None:
    """Raise ``ValueError`` naming missing keys, unexpected keys and shape mismatches between two key -> shape maps.

    Used instead of ``load_state_dict(strict=False)``, which would silently skip a renamed or missing tensor.
    """
    missing = set(expected) - set(found)
    unexpected = set(found) - set(expected)
    mismatched = {
        f"{key}: file {list(found[key])} vs model {list(expected[key])}"
        for key in set(expected) & set(found)
        if tuple(found[key]) != tuple(expected[key])
    }
    problems = []
    if missing:
        problems.append(f"missing keys {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_describe(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_describe(mismatched)}")
    if problems:
        raise ValueError(f"{what} does not match the model: " + "; ".join(problems))


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
