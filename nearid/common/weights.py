"""Weights are loaded from safetensors only: pickle files (``.bin``, ``.pt``, ``.ckpt``) can run code when loaded.

Every loader passes ``use_safetensors=True`` to ``from_pretrained`` and, for a local folder, calls
:func:`require_safetensors` first, so a folder holding only pickles fails with a message that says why and what to
do instead of a library's "file not found".
"""

from __future__ import annotations

from pathlib import Path


PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def require_safetensors(folder: str | Path, recursive: bool = False) -> None:
    """Raise ``FileNotFoundError`` when a local weights folder, or (``recursive``, a pipeline) any of its component
    folders, holds pickled weights without safetensors beside them, naming the pickles; hub ids and folders that
    do not exist are left to the loader."""
    path = Path(folder)
    if not path.is_dir():
        return
    folders = [path, *(p for p in sorted(path.rglob("*")) if p.is_dir())] if recursive else [path]
    found_any = False
    for current in folders:
        if any(current.glob("*.safetensors")):
            found_any = True
            continue
        pickles = sorted(str(p.relative_to(path)) for pattern in PICKLE_PATTERNS for p in current.glob(pattern))
        if pickles:
            raise FileNotFoundError(
                f"{path} holds {pickles[:4]} without safetensors: nearid loads safetensors only (pickle files can "
                "run code when loaded). Use the safetensors variant of the checkpoint."
            )
    if not found_any:
        raise FileNotFoundError(f"no safetensors weights in {path}")
