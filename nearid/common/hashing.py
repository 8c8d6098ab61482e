"""Stable hashes of configurations, used to decide whether an existing shard is still current."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def config_hash(config: Any, **extra: Any) -> str:
    """SHA-256 (16 hex chars) of a dataclass or mapping in canonical JSON, plus any extra keys."""
    payload = {"config": _plain(config), **{k: _plain(v) for k, v in extra.items()}}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
