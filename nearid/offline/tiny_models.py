"""``nearid tiny-models``: build every tiny offline model once, with fixed seeds, into one folder.

The folder holds one sub-folder per model, loadable by the same ``from_pretrained`` calls as the
public checkpoints, and ``tiny-models.json``, which says what each folder stands in for.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path


logger = logging.getLogger(__name__)

INDEX_NAME = "tiny-models.json"
TINY_FORMAT_VERSION = 3  # bump whenever the set or layout of tiny models changes


def _library_versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}


def read_index(out_dir: str | Path) -> dict | None:
    """The index of a tiny-models folder, or None when there is no complete build there."""
    path = Path(out_dir) / INDEX_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def build_tiny_models(out_dir: str | Path, seed: int = 0, force: bool = False) -> dict:
    """Build all tiny models into ``out_dir``; an existing build with the same seed and library versions
    is reused. The index is written last, so an interrupted build is never mistaken for a complete one."""
    import diffusers.utils.logging
    import transformers.utils.logging

    from nearid.offline.tiny_encoders import save_tiny_encoders
    from nearid.offline.tiny_pipelines import save_tiny_pipelines
    from nearid.offline.tiny_powerpaint import save_tiny_powerpaint

    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()

    out = Path(out_dir)
    wanted = {"format": TINY_FORMAT_VERSION, "seed": seed, "versions": _library_versions()}
    existing = read_index(out)
    if existing and not force and all(existing.get(k) == v for k, v in wanted.items()):
        logger.info("tiny models already built in %s", out)
        return existing
    if out.exists():
        (out / INDEX_NAME).unlink(missing_ok=True)
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    models = {
        **save_tiny_encoders(out, seed),
        **save_tiny_pipelines(out, seed),
        **save_tiny_powerpaint(out, seed + 60),
    }
    index = {
        **wanted,
        "models": {name: {"path": name, "stands_in_for": model_id} for name, model_id in models.items()},
    }
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return index
