"""Weights are loaded from safetensors only, and a model that cannot be had fails at once, in one line.

Pickle files (``.bin``, ``.pt``, ``.ckpt``) can run code when loaded: every loader passes ``use_safetensors=True``
to ``from_pretrained`` and first calls :func:`require_weights`, so a folder holding only pickles fails with a message
that says why and what to do instead of a library's "file not found". A hub id that is neither cached nor reachable
(offline machines, ``HF_HUB_OFFLINE``) fails in well under a second with the fix, instead of minutes of download
retries ending in two tracebacks.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlparse


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


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
"""``org/name`` or ``name``: anything else that is not a folder is a path that does not exist."""


class WeightsUnavailable(FileNotFoundError):
    """A model is neither a local folder, nor in the Hugging Face cache, nor downloadable from here."""


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The local Hugging Face cache's snapshot of ``repo_id`` at ``revision`` (default: main), named by its commit;
    None when it is not cached. Never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError is an OSError), or not a repository id
        return None


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection within ``timeout_s`` (no retries)."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def require_weights(name_or_path: str | Path, hint: str = "", recursive: bool = False) -> None:
    """Fail fast, in one line ending with ``hint`` (the fix), unless ``name_or_path`` can be loaded: a local folder
    with safetensors (:func:`require_safetensors`), or a hub id that is cached or downloadable right now."""
    name = str(name_or_path)
    suffix = f"; {hint}" if hint else ""
    if Path(name).is_dir():
        require_safetensors(name, recursive=recursive)
        return
    if not HUB_ID.fullmatch(name):
        raise FileNotFoundError(f"{name}: no such folder{suffix}")
    if cached_snapshot(name) is not None:
        return
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise WeightsUnavailable(
            f"{name} is not a local folder nor in the Hugging Face cache (HF_HUB_OFFLINE){suffix}"
        )
    if not hub_reachable():
        raise WeightsUnavailable(
            f"{name} is not a local folder nor in the Hugging Face cache, and the hub cannot be reached from here"
            f"{suffix}"
        )
