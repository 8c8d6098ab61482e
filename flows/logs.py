"""Logging for flow bodies, inside Prefect runs and when called as plain functions (``.fn()``)."""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.exceptions import MissingContextError


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger (its lines reach the Prefect API), or the ``flows`` logger outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("flows")
