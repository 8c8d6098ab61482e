"""Scorers: everything that can say how similar two images are, by name.

Two kinds exist. An *embedding* scorer maps each image to a unit vector (similarity = cosine); a *judge* scores an
image pair directly (the VLM judge, similarity = score / 10). Each scorer is one small class; ``SCORERS`` maps names
to classes, and a folder holding a release checkpoint (``config.json`` with ``model_type`` "nearid") is the
``release`` scorer. Models load through the real ``from_pretrained`` from a hub id or a local folder:
``ScorerSettings.models`` overrides one scorer's model, ``ScorerSettings.model_dir`` points every named scorer at
``DIR/<folder>`` (the layout of ``nearid tiny-models``).

A scorer's ``fingerprint`` covers what decides its outputs and nothing else: the scorer name and kind, the model
(a hub id, or the content of a local folder, so a retrained checkpoint at the same path is a new fingerprint) and
condition-independent settings (dtype; for the judge also the prompt and the generation budget). It keys the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image

from nearid.common.hashing import model_identity
from nearid.common.weights import require_weights
from nearid.evaluation.vlm_judge import JUDGE_PROMPT, Verdict, chat_prompt, parse_answer
from nearid.model.release import is_release_dir


logger = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
ScorerKind = Literal["embedding", "judge"]


def normalise_dtype(name: str) -> str:
    """A canonical dtype name from ``float32``/``fp32``, ``float16``/``fp16`` or ``bfloat16``/``bf16``."""
    canonical = _DTYPE_ALIASES.get(name, name)
    if canonical not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {list(DTYPES) + list(_DTYPE_ALIASES)}")
    return canonical


@dataclass(frozen=True)
class ScorerSettings:
    """How scorers are loaded and run; ``models`` holds (scorer name, hub id or folder) overrides."""

    models: tuple[tuple[str, str], ...] = ()
    model_dir: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32
    max_new_tokens: int = 512

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", normalise_dtype(self.dtype))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        names = [name for name, _ in self.models]
        unknown = sorted(set(names) - set(SCORERS))
        if unknown:
            raise ValueError(f"model override for unknown scorer(s) {unknown}; scorers: {sorted(SCORERS)}")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"more than one model given for scorer(s) {repeated}")
        if self.model_dir is not None and not Path(self.model_dir).is_dir():
            raise ValueError(f"model_dir {self.model_dir!r} is not a folder")

    def model_for(self, scorer: type[Scorer]) -> str:
        """The model a named scorer loads: its override, else ``model_dir/<folder>``, else its hub default."""
        overrides = dict(self.models)
        if scorer.name in overrides:
            return overrides[scorer.name]
        if self.model_dir is not None:
            folder = Path(self.model_dir) / scorer.model_dir_folder
            if not folder.is_dir():
                raise ValueError(
                    f"scorer {scorer.name!r}: {folder} does not exist (model_dir holds no {scorer.model_dir_folder}/)"
                )
            return str(folder)
        return scorer.default_model


def _torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class Scorer(ABC):
    """A named way of scoring image similarity, loaded lazily; see the module docstring."""

    name: ClassVar[str]
    kind: ClassVar[ScorerKind]
    default_model: ClassVar[str]
    model_dir_folder: ClassVar[str]

    def __init__(self, model: str, settings: ScorerSettings) -> None:
        self.model = model
        self.settings = settings
        self._loaded = False

    @property
    def label(self) -> str:
        """The scorer's name in results and reports."""
        return self.name

    def fingerprint_settings(self) -> dict[str, Any]:
        """The condition-independent settings that change outputs (part of the fingerprint)."""
        return {"dtype": self.settings.dtype}

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of scorer name, kind, model identity and output-changing settings."""
        payload = {
            "scorer": self.name,
            "kind": self.kind,
            "model": model_identity(self.model),
            "settings": self.fingerprint_settings(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        """Label, name, kind, model, fingerprint and settings, for results files."""
        return {
            "label": self.label,
            "name": self.name,
            "kind": self.kind,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "settings": self.fingerprint_settings(),
        }

    def weights_hint(self) -> str:
        """How to point this scorer at local weights, for the one-line error when they cannot be had."""
        if not self.model_dir_folder:
            return "pass the folder itself as --scorer"
        return f"pass --model-dir DIR holding {self.model_dir_folder}/, or the folder itself as --scorer"

    def load(self) -> None:
        """Load the model once (idempotent)."""
        if not self._loaded:
            logger.info("loading scorer %s from %s", self.label, self.model)
            self._load()
            self._loaded = True

    def unload(self) -> None:
        """Drop the model, freeing its memory."""
        self._unload()
        self._loaded = False

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _unload(self) -> None: ...


class EmbeddingScorer(Scorer):
    """A scorer that embeds single images; similarity is the cosine of unit-length embeddings."""

    kind: ClassVar[ScorerKind] = "embedding"

    def __init__(self, model: str, settings: ScorerSettings) -> None:
        super().__init__(model, settings)
        self._model: Any = None
        self._processor: Any = None

    def _load(self) -> None:
        from transformers import AutoImageProcessor

        require_weights(self.model, hint=self.weights_hint())
        self._model = self._load_model(_torch_dtype(self.settings.dtype)).to(self.settings.device).eval()
        self._processor = AutoImageProcessor.from_pretrained(self.model, backend="pil")

    def _unload(self) -> None:
        self._model = self._processor = None

    @abstractmethod
    def _load_model(self, dtype: Any) -> Any: ...

    @abstractmethod
    def _features(self, pixel_values: Any) -> Any:
        """Raw embeddings [N, D] of preprocessed pixels."""

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Unit-length float32 embeddings [N, D] of RGB images, in order."""
        import torch

        self.load()
        pixels = self._processor(images=list(images), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.settings.device, _torch_dtype(self.settings.dtype))
        with torch.inference_mode():
            features = self._features(pixels)
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


class SiglipMapScorer(EmbeddingScorer):
    """Frozen SigLIP2 read out through its own pretrained MAP head (``pooler_output``)."""

    name = "siglip2-map"
    default_model = "google/siglip2-so400m-patch14-384"
    model_dir_folder = "siglip2"

    def _load_model(self, dtype: Any) -> Any:
        from transformers import SiglipVisionModel

        return SiglipVisionModel.from_pretrained(self.model, dtype=dtype, use_safetensors=True)

    def _features(self, pixel_values: Any) -> Any:
        return self._model(pixel_values=pixel_values).pooler_output


class SiglipMeanScorer(SiglipMapScorer):
    """Frozen SigLIP2 without its head: the mean of the final (post-layernorm) patch tokens."""

    name = "siglip2-mean"

    def _features(self, pixel_values: Any) -> Any:
        return self._model(pixel_values=pixel_values).last_hidden_state.mean(dim=1)


class ClipScorer(EmbeddingScorer):
    """CLIP ViT-L/14 image embeddings (the projected ``image_embeds``)."""

    name = "clip"
    default_model = "openai/clip-vit-large-patch14"
    model_dir_folder = "clip-vit"

    def _load_model(self, dtype: Any) -> Any:
        from transformers import CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection.from_pretrained(self.model, dtype=dtype, use_safetensors=True)

    def _features(self, pixel_values: Any) -> Any:
        return self._model(pixel_values=pixel_values).image_embeds


class Dinov2Scorer(EmbeddingScorer):
    """DINOv2-L CLS token (``last_hidden_state[:, 0]``, after the final layernorm)."""

    name = "dinov2"
    default_model = "facebook/dinov2-large"
    model_dir_folder = "dinov2"

    def _load_model(self, dtype: Any) -> Any:
        from transformers import Dinov2Model

        return Dinov2Model.from_pretrained(self.model, dtype=dtype, use_safetensors=True)

    def _features(self, pixel_values: Any) -> Any:
        return self._model(pixel_values=pixel_values).last_hidden_state[:, 0]


class ReleaseScorer(EmbeddingScorer):
    """A trained NearID checkpoint in the release layout (``nearid.model.release``), named by its folder."""

    name = "release"
    default_model = ""
    model_dir_folder = ""

    @property
    def label(self) -> str:
        return f"release:{Path(self.model).resolve().name}"

    def _load(self) -> None:
        from nearid.model.release import load_release

        self._model, self._processor = load_release(
            self.model, device=self.settings.device, dtype=_torch_dtype(self.settings.dtype)
        )

    def _load_model(self, dtype: Any) -> Any:  # loading goes through load_release
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Also the distractor sources the model was trained on, when its release records them."""
        from nearid.model.release import read_release_config

        training = read_release_config(self.model).get("nearid_training") or {}
        return {**super().describe(), "training_sources": list(training.get("sources") or [])}

    def _features(self, pixel_values: Any) -> Any:
        return self._model.embed(pixel_values)


class VlmJudgeScorer(Scorer):
    """Qwen3-VL asked, image pair by image pair, for an instance-identity score from 0 to 10 (appendix E.11)."""

    name = "vlm-judge"
    kind: ClassVar[ScorerKind] = "judge"
    default_model = "Qwen/Qwen3-VL-30B-A3B-Instruct"
    model_dir_folder = "qwen3-vl"
    image_token = "<|image_pad|>"

    def __init__(self, model: str, settings: ScorerSettings) -> None:
        super().__init__(model, settings)
        self._model: Any = None
        self._tokenizer: Any = None
        self._image_processor: Any = None
        self._image_token_id: int | None = None

    def fingerprint_settings(self) -> dict[str, Any]:
        prompt = hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest()[:16]
        return {"dtype": self.settings.dtype, "max_new_tokens": self.settings.max_new_tokens, "prompt": prompt}

    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        require_weights(self.model, hint=self.weights_hint())
        tokenizer = AutoTokenizer.from_pretrained(self.model)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        model = AutoModelForImageTextToText.from_pretrained(
            self.model, dtype=_torch_dtype(self.settings.dtype), use_safetensors=True
        )
        if token_id != getattr(model.config, "image_token_id", None):
            raise ValueError(
                f"{self.model}: tokenizer id of {self.image_token} ({token_id}) differs from the model's "
                f"image_token_id ({getattr(model.config, 'image_token_id', None)}); not a Qwen-VL checkpoint?"
            )
        self._model = model.to(self.settings.device).eval()
        self._tokenizer = tokenizer
        self._image_processor = AutoImageProcessor.from_pretrained(self.model, backend="pil")
        self._image_token_id = token_id

    def _unload(self) -> None:
        self._model = self._tokenizer = self._image_processor = None

    def judge(self, pairs: Sequence[tuple[Image.Image, Image.Image]]) -> list[tuple[Verdict, str]]:
        """Greedy answers for image pairs (A, B), parsed; returns (verdict, raw answer) per pair, in order."""
        import torch

        self.load()
        if not pairs:
            return []
        vision = self._image_processor(images=[image for pair in pairs for image in pair], return_tensors="pt")
        merge = int(self._image_processor.merge_size)
        tokens = (vision["image_grid_thw"].prod(dim=-1) // merge**2).tolist()
        texts = [chat_prompt((tokens[2 * i], tokens[2 * i + 1]), self.image_token) for i in range(len(pairs))]
        text = self._tokenizer(texts, return_tensors="pt", padding=True)
        device = self.settings.device
        inputs = {
            "input_ids": text["input_ids"].to(device),
            "attention_mask": text["attention_mask"].to(device),
            "mm_token_type_ids": (text["input_ids"] == self._image_token_id).int().to(device),
            "pixel_values": vision["pixel_values"].to(device, _torch_dtype(self.settings.dtype)),
            "image_grid_thw": vision["image_grid_thw"].to(device),
        }
        with torch.inference_mode():
            output = self._model.generate(**inputs, max_new_tokens=self.settings.max_new_tokens, do_sample=False)
        answers = self._tokenizer.batch_decode(output[:, text["input_ids"].shape[1] :], skip_special_tokens=True)
        return [(parse_answer(answer), answer) for answer in answers]


SCORERS: dict[str, type[Scorer]] = {
    "siglip2-map": SiglipMapScorer,
    "siglip2-mean": SiglipMeanScorer,
    "clip": ClipScorer,
    "dinov2": Dinov2Scorer,
    "vlm-judge": VlmJudgeScorer,
}
"""Named scorers; a release checkpoint is addressed by its folder instead of a name."""


def build_scorer(spec: str, settings: ScorerSettings | None = None) -> Scorer:
    """The scorer for a registered name or for a folder holding a release checkpoint (not loaded yet)."""
    settings = settings or ScorerSettings()
    if spec in SCORERS:
        cls = SCORERS[spec]
        return cls(settings.model_for(cls), settings)
    if os.path.isdir(spec) and is_release_dir(spec):
        return ReleaseScorer(spec, settings)
    reason = "a folder without a release config.json (model_type 'nearid')" if os.path.isdir(spec) else "not a folder"
    raise ValueError(f"unknown scorer {spec!r} ({reason}); scorers: {sorted(SCORERS)} or a release checkpoint folder")
