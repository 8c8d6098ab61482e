"""``nearid export-model``: a training run to the official NearID release layout."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from nearid.model.nearid_model import NearIDModel
from nearid.model.release import save_release
from nearid.training.config import TrainConfig
from nearid.training.run_folder import BEST_HEAD_FILE, HEAD_FILE


def export_model(run: str | Path, out: str | Path, best: bool = False) -> Path:
    """Write the run's backbone with its trained head (final, or best on validation) as a release folder."""
    from transformers import AutoImageProcessor

    run = Path(run)
    config_file = run / "config.yaml"
    head_file = run / (BEST_HEAD_FILE if best else HEAD_FILE)
    for required in (config_file, head_file):
        if not required.is_file():
            raise FileNotFoundError(f"{required} does not exist: {run} is not a finished training run")
    config = TrainConfig.from_yaml(config_file)
    model = NearIDModel.from_pretrained(config.model.backbone, torch.float32, config.model.revision)
    model.head.load_state_dict(load_file(str(head_file)), strict=True)
    processor = AutoImageProcessor.from_pretrained(config.model.backbone, revision=config.model.revision)
    training = {"sources": list(config.data.sources), "splits": list(config.data.splits), "run": str(run.resolve())}
    return save_release(model.backbone, model.head, processor, out, training=training)
