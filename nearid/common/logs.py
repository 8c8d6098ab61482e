"""Logging set-up shared by the CLI entry points."""

from __future__ import annotations

import logging
import os

from nearid.common.progress import PROGRESS_ENV, progress_mode


def setup_logging(verbosity: int = 0) -> None:
    """INFO by default, DEBUG with -v, WARNING with -q (which hides progress too, in child processes as well);
    third-party libraries stay at WARNING/ERROR."""
    if verbosity < 0:
        os.environ[PROGRESS_ENV] = "off"
    if progress_mode() != "bar":  # the hub's and transformers' own bars (downloads, "Loading weights") too
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if verbosity <= 0:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        for noisy in ("httpx", "urllib3", "filelock", "fsspec"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
