"""Shared fixtures: a tiny procedural dataset and the tiny offline models, each built once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.storage.s3_server import s3_endpoint, s3_root  # a real S3 API on loopback, one per session


__all__ = ["s3_endpoint", "s3_root"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nearid.offline.tiny_models import build_tiny_models

    out = tmp_path_factory.mktemp("tiny-models")
    build_tiny_models(out)
    return out


@pytest.fixture(scope="session")
def procedural_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """12 procedural identities at 64 px in 3 shards; treat as read-only (copy it to modify)."""
    from nearid.common.procedural import ProceduralConfig
    from nearid.curation.procedural import curate_procedural

    root = str(tmp_path_factory.mktemp("procedural") / "data")
    curate_procedural(root, ProceduralConfig(identities=12, image_size=64, seed=3), shard_size=5, progress=False)
    return root


@pytest.fixture
def dataset_copy(procedural_root: str, tmp_path: Path) -> str:
    """A private, modifiable copy of the procedural dataset."""
    target = tmp_path / "data"
    shutil.copytree(procedural_root, target)
    return str(target)
