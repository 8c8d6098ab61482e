"""The NearID embedding model: a frozen SigLIP2 vision backbone and a trainable copy of its MAP head.

The backbone runs in eval mode without gradients (in half precision on GPUs); the head, initialised
from the backbone's own multi-head attention pooling head, trains in fp32. ``embed`` returns
L2-normalised vectors: all comparisons are cosines.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from nearid.common.weights import require_weights


logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "google/siglip2-so400m-patch14-384"


class NearIDModel(nn.Module):
    """Frozen backbone + trainable MAP head."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    @classmethod
    def from_pretrained(
        cls, backbone: str = DEFAULT_BACKBONE, backbone_dtype: torch.dtype = torch.float32, revision: str | None = None
    ) -> NearIDModel:
        """Load ``SiglipVisionModel`` from a hub id or folder and copy its MAP head as the trainable head."""
        from transformers import SiglipVisionModel

        require_weights(backbone, hint="set model.backbone to a local SigLIP2 folder (see docs/training.md)")
        vision = SiglipVisionModel.from_pretrained(
            backbone, dtype=backbone_dtype, revision=revision, use_safetensors=True
        )
        if getattr(vision, "head", None) is None:
            raise ValueError(f"{backbone} has no attention pooling head (vision_use_head is off)")
        head = copy.deepcopy(vision.head).float()
        model = cls(vision, head)
        logger.info(
            "backbone %s: %.1fM frozen parameters; head: %.2fM trainable",
            backbone,
            sum(p.numel() for p in vision.parameters()) / 1e6,
            model.trainable_parameters() / 1e6,
        )
        return model

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.head.parameters() if p.requires_grad)

    def train(self, mode: bool = True) -> NearIDModel:
        """Only the head ever trains; the backbone stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frozen backbone tokens (after the final layer norm), the head's input."""
        dtype = next(self.backbone.parameters()).dtype
        return self.backbone(pixel_values=pixel_values.to(dtype)).last_hidden_state

    def embed_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Head on precomputed tokens, in fp32, L2-normalised."""
        return F.normalize(self.head(tokens.float()), dim=-1)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings ``[N, D]``."""
        return self.embed_features(self.features(pixel_values))

    @property
    def embed_dim(self) -> int:
        return int(self.backbone.config.hidden_size)
