"""Generator configurations: one frozen, validated dataclass per paper configuration.

A configuration is everything that determines its images: models, working resolution, sampler,
prompting and post-processing. Its :meth:`GeneratorConfig.params_hash` is recorded on every row and
decides whether an existing shard is still current.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nearid.common.hashing import config_hash


Family = Literal["flux-fill", "flux-canny", "sdxl-inpaint", "qwen-inpaint", "powerpaint", "procedural", "null"]
ResizeMode = Literal["square", "shortest-side"]
PromptStrategy = Literal["nearest", "self"]

SDXL_NEGATIVE_PROMPT = "text, watermark, signature, logo, low resolution, blurry, jpeg artifacts, deformed, duplicate"

# FlowMatch Euler settings the Lightning LoRA was distilled with (shift 3 as a constant mu = log 3)
LIGHTNING_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": math.log(3),
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": math.log(3),
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": None,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}


POLICY_VERSION = 2
"""Part of every configuration's hash: bumped whenever the shared policy (``generators/policy.py``) changes the
images, so shards made under an older policy count as outdated (2: the repainted region keeps holes and every
significant part, and compositing happens at the 512 output)."""


@dataclass(frozen=True)
class ModelRef:
    """One model a configuration loads: the public hub id and the folder name under ``--model-dir``."""

    role: str
    hub_id: str
    local_name: str
    revision: str | None = None
    weight_name: str | None = None
    subfolder: str | None = None


@dataclass(frozen=True)
class GeneratorConfig:
    """A complete, hashable description of one distractor source."""

    name: str
    family: Family
    models: tuple[ModelRef, ...]
    resolution: int
    resize_mode: ResizeMode = "square"
    size_multiple: int = 16
    steps: int = 0
    guidance: float = 0.0
    strength: float | None = None
    negative_prompt: str | None = None
    scheduler: str | None = None
    extras: tuple[tuple[str, Any], ...] = ()
    prompt_template: str = "{description}"
    prompt_strategy: PromptStrategy = "nearest"
    composite: bool = True
    composite_dilation: int = 7  # pixels at the output size, scaled to the working size
    output_size: int = 512
    batch_size: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.lower() or " " in self.name:
            raise ValueError(f"configuration name must be lower-case without spaces, got {self.name!r}")
        if self.resolution < 16 or self.resolution % self.size_multiple:
            raise ValueError(
                f"{self.name}: resolution {self.resolution} must be >= 16 and a multiple of {self.size_multiple}"
            )
        if self.steps < 0 or self.guidance < 0:
            raise ValueError(f"{self.name}: steps and guidance must be >= 0")
        if self.strength is not None and not 0.0 < self.strength <= 1.0:
            raise ValueError(f"{self.name}: strength must be in (0, 1], got {self.strength}")
        if self.strength is not None and self.steps and int(self.steps * self.strength) < 1:
            raise ValueError(
                f"{self.name}: {self.steps} steps at strength {self.strength} leave no denoising step; use more steps"
            )
        if "{description}" not in self.prompt_template:
            raise ValueError(f"{self.name}: prompt_template must contain '{{description}}'")
        if self.composite_dilation < 0 or self.output_size < 16 or self.batch_size < 1:
            raise ValueError(f"{self.name}: composite_dilation >= 0, output_size >= 16 and batch_size >= 1 required")

    def extra(self, key: str, default: Any = None) -> Any:
        return dict(self.extras).get(key, default)

    def model(self, role: str) -> ModelRef:
        for ref in self.models:
            if ref.role == role:
                return ref
        raise KeyError(f"{self.name} has no model with role {role!r}")

    def with_overrides(self, **overrides: Any) -> GeneratorConfig:
        """A copy with scalar fields replaced, each checked against its type (``steps=2.5`` or ``steps="abc"``
        is refused, not truncated) and the whole validated again, e.g. fewer steps for a CPU demo."""
        kinds = typing.get_type_hints(GeneratorConfig)
        settable = {name for name, kind in kinds.items() if _scalar_kinds(kind)}
        unknown = set(overrides) - set(kinds)
        if unknown:
            raise ValueError(f"unknown configuration fields {sorted(unknown)}; valid: {sorted(settable)}")
        fixed = set(overrides) - settable
        if fixed:
            raise ValueError(f"configuration fields {sorted(fixed)} cannot be overridden; valid: {sorted(settable)}")
        return dataclasses.replace(self, **{k: _typed(k, v, kinds[k]) for k, v in overrides.items()})

    def with_revisions(self, pins: Mapping[str, str]) -> GeneratorConfig:
        """A copy whose models from these hub ids load at these commits (part of the hash and the provenance)."""
        models = tuple(dataclasses.replace(m, revision=pins.get(m.hub_id, m.revision)) for m in self.models)
        return dataclasses.replace(self, models=models)

    def params_hash(self) -> str:
        """Hash of everything that changes the images (batch size and order excluded)."""
        payload = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("batch_size", "description")
        }
        return config_hash({**payload, "policy": POLICY_VERSION})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["extras"] = dict(self.extras)
        data["params_hash"] = self.params_hash()
        return data


def _scalar_kinds(kind: Any) -> tuple[Any, ...]:
    """The accepted value kinds of a scalar field annotation (``int``, ``float | None``, a ``Literal``), or ()
    for the structured fields (models, extras) that only code may change."""
    args = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    scalars = tuple(a for a in args if a in (int, float, str, bool, type(None)) or typing.get_origin(a) is Literal)
    return scalars if len(scalars) == len(args) else ()


def _typed(name: str, value: Any, kind: Any) -> Any:
    """``value`` checked against ``kind``: integers stay integers, numbers must be finite, choices must be valid."""
    for accepted in _scalar_kinds(kind):
        if accepted is type(None) and value is None:
            return None
        if accepted is bool and isinstance(value, bool):
            return value
        if accepted is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if (
            accepted is float
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
        ):
            return float(value)
        if accepted is str and isinstance(value, str):
            return value
        if typing.get_origin(accepted) is Literal and value in typing.get_args(accepted):
            return value
    raise ValueError(f"configuration field {name!r} must be {_describe(kind)}, got {value!r}")


def _describe(kind: Any) -> str:
    names = []
    for accepted in _scalar_kinds(kind):
        if typing.get_origin(accepted) is Literal:
            names.append("one of " + ", ".join(map(repr, typing.get_args(accepted))))
        else:
            names.append(
                {type(None): "null", float: "a finite number", int: "an integer"}.get(accepted, accepted.__name__)
            )
    return " or ".join(names)
