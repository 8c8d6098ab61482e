"""The PowerPaint v2 checkpoint layout and the strict checks every loader here applies: safetensors only, and every
missing, unexpected or mis-shaped key named (never ``load_state_dict(strict=False)``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nearid.common.weights import require_safetensors


BRUSHNET_FOLDER = "PowerPaint_Brushnet"
BRUSHNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


def _describe(keys: set[str], limit: int = 5) -> str:
    """``count (first few, ...)`` for an error message."""
    shown = ", ".join(sorted(keys)[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def check_state_dict_keys(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], what: str
) -> None:
    """Raise ``ValueError`` naming missing keys, unexpected keys and shape mismatches between two key -> shape maps.

    Used instead of ``load_state_dict(strict=False)``, which would silently skip a renamed or missing tensor.
    """
    missing = set(expected) - set(found)
    unexpected = set(found) - set(expected)
    mismatched = {
        f"{key}: file {list(found[key])} vs model {list(expected[key])}"
        for key in set(expected) & set(found)
        if tuple(found[key]) != tuple(expected[key])
    }
    problems = []
    if missing:
        problems.append(f"missing keys {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_describe(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_describe(mismatched)}")
    if problems:
        raise ValueError(f"{what} does not match the model: " + "; ".join(problems))


def find_text_encoder_file(brushnet_dir: Path) -> Path:
    """The PowerPaint text encoder's safetensors file: the one in ``PowerPaint_Brushnet/`` besides the branch."""
    require_safetensors(brushnet_dir)
    candidates = sorted(path for path in brushnet_dir.glob("*.safetensors") if path.name != BRUSHNET_WEIGHTS)
    if not candidates:
        if (brushnet_dir / "pytorch_model.bin").exists():
            raise FileNotFoundError(
                f"{brushnet_dir} has the PowerPaint text encoder only as pytorch_model.bin (as the hub publishes it), "
                f"and nearid loads safetensors only: run `nearid convert-weights {brushnet_dir.parent}` once"
            )
        raise FileNotFoundError(f"no text encoder safetensors in {brushnet_dir} (expected model.safetensors)")
    if len(candidates) > 1:
        raise ValueError(f"several text encoder candidates in {brushnet_dir}: {[path.name for path in candidates]}")
    return candidates[0]


def find_unet_weights(unet_dir: Path) -> Path:
    """The base UNet's safetensors file: ``diffusion_pytorch_model.safetensors``, or the one other name the hub's
    PowerPaint v2 upload uses (``diffusion_pytorch_model-002.safetensors``), which ``from_pretrained`` misses."""
    standard = unet_dir / "diffusion_pytorch_model.safetensors"
    if standard.is_file():
        return standard
    candidates = sorted(unet_dir.glob("diffusion_pytorch_model*.safetensors"))
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ValueError(f"several UNet weight files in {unet_dir}: {[path.name for path in candidates]}")
    if any(unet_dir.glob("diffusion_pytorch_model*.bin")):
        raise FileNotFoundError(
            f"{unet_dir} has the UNet only as a pickle: run `nearid convert-weights {unet_dir}` once"
        )
    raise FileNotFoundError(f"no UNet safetensors in {unet_dir}")
