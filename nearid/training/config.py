"""Training configuration: a YAML file validated into frozen dataclasses (unknown keys are errors).

Defaults are the paper's recipe (§4.1): AdamW lr 1e-4, weight decay 1e-4, cosine schedule with 100
warm-up steps, global batch 128, 11 epochs, role-aware masking 0.5 / 0.2 / 0.6, MTG mixed in x4.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nearid.model.nearid_model import DEFAULT_BACKBONE


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class DataConfig:
    """Where tuples come from and how each slot is masked and augmented."""

    root: str
    sources: tuple[str, ...]
    splits: tuple[str, ...] = ("train",)
    mtg: str | None = None
    mtg_split: str = "train"
    mtg_repeat: int = 4
    anchor_mask_prob: float = 0.5
    positive_mask_prob: float = 0.2
    distractor_mask_prob: float = 0.6
    flip_prob: float = 0.5
    jitter_prob: float = 0.5
    affine_prob: float = 0.3
    num_workers: int = 2
    prefetch_factor: int = 4
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "splits", tuple(self.splits))
        if not self.sources:
            raise ValueError("data.sources: name at least one distractor configuration to train on")
        held_out = sorted(set(self.splits) - {"train"})
        if held_out:
            raise ValueError(f"data.splits: training on {held_out} identities is refused (held out for evaluation)")
        if self.mtg is not None and self.mtg_split == "test":
            raise ValueError("data.mtg_split: the MTG test split is for evaluation; train on 'train'")
        if self.mtg_repeat < 1 or self.num_workers < 0 or self.prefetch_factor < 1:
            raise ValueError("data.mtg_repeat and data.prefetch_factor must be >= 1, data.num_workers >= 0")
        for name in ("anchor_mask_prob", "positive_mask_prob", "distractor_mask_prob", "flip_prob", "jitter_prob"):
            _probability(f"data.{name}", getattr(self, name))
        _probability("data.affine_prob", self.affine_prob)


@dataclass(frozen=True)
class ModelConfig:
    """The frozen backbone; ``auto`` runs it in bf16 on CUDA and fp32 elsewhere."""

    backbone: str = DEFAULT_BACKBONE
    backbone_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    revision: str | None = None

    def __post_init__(self) -> None:
        _choice("model.backbone_dtype", self.backbone_dtype, ("auto", "float32", "bfloat16", "float16"))


@dataclass(frozen=True)
class LossConfig:
    """A loss from ``nearid.training.losses.LOSSES`` and its hyperparameters."""

    name: str = "nearid"
    params: dict[str, float] = field(default_factory=lambda: {"tau": 0.07, "alpha": 0.5})

    def __post_init__(self) -> None:
        from nearid.training.losses import get_loss

        get_loss(self.name, **self.params)  # unknown names and parameters fail here, before any work


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    epochs: int = 11
    global_batch: int = 128
    grad_clip: float = 1.0
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip <= 0:
            raise ValueError("optim: lr and grad_clip must be > 0, weight_decay and warmup_steps >= 0")
        if self.epochs < 1 or self.global_batch < 2:
            raise ValueError("optim: epochs >= 1 and global_batch >= 2 required")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("optim.max_steps must be >= 1 when set")


@dataclass(frozen=True)
class RunConfig:
    out: str
    seed: int = 0
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    """``auto``: bf16 on CUDA, none on CPU. bf16 keeps fp32's exponent range, so it needs no loss scaling; the
    paper trained in fp16. The resolved choice is written to ``RUN/run.json``."""
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    val_source: str | None = None

    def __post_init__(self) -> None:
        _choice("run.mixed_precision", self.mixed_precision, ("auto", "no", "fp16", "bf16"))
        if min(self.log_every, self.eval_every, self.checkpoint_every, self.keep_checkpoints) < 1:
            raise ValueError("run: log_every, eval_every, checkpoint_every and keep_checkpoints must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    run: RunConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        sections = {
            "data": DataConfig,
            "run": RunConfig,
            "model": ModelConfig,
            "loss": LossConfig,
            "optim": OptimConfig,
        }
        unknown = set(data) - set(sections)
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}; valid: {sorted(sections)}")
        built = {}
        for name, section in sections.items():
            values = data.get(name) or {}
            if not isinstance(values, dict):
                raise ValueError(f"config section {name!r} must be a mapping")
            fields = {f.name for f in dataclasses.fields(section)}
            extra = set(values) - fields
            if extra:
                raise ValueError(f"unknown keys in {name}: {sorted(extra)}; valid: {sorted(fields)}")
            if name in ("data", "run") and not values:
                raise ValueError(f"config section {name!r} is required")
            built[name] = section(**values)
        return cls(**built)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        text = Path(path).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a training config is a YAML mapping")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["data"]["sources"] = list(self.data.sources)
        data["data"]["splits"] = list(self.data.splits)
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
