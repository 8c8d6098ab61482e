"""Training checkpoints in non-executable formats only: safetensors for tensors, JSON for the rest.

A checkpoint holds everything a resume needs to continue exactly: the head, the AdamW moments and step
counts, every process's torch RNG state and our counters (the global step, which alone sets the learning rate,
and the number of processes that wrote it).
(``accelerate.save_state`` writes pickles, which this project never loads.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nearid.training.run_folder import CHECKPOINT_STATE_FILE


STATE_FILE = CHECKPOINT_STATE_FILE


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{index}.{key}"] = tensor.detach().cpu().contiguous()
    return tensors, {"param_groups": state["param_groups"]}


def save_checkpoint(
    folder: Path,
    head: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    counters: dict[str, Any],
    rank: int,
    is_main: bool,
) -> None:
    """Write this process's part (its RNG state) and, on the main process, the shared state."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng |= {f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    save_file(rng, str(folder / f"rng_{rank}.safetensors"))
    if not is_main:
        return
    save_file(
        {k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()},
        str(folder / "head.safetensors"),
    )
    tensors, meta = _optimizer_tensors(optimizer)
    save_file(tensors, str(folder / "optimizer.safetensors"))
    payload = {**counters, "optimizer": meta}
    (folder / STATE_FILE).write_text(json.dumps(payload, indent=1))  # written last: marks the checkpoint complete


def load_checkpoint(
    folder: Path,
    head: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rank: int,
) -> dict[str, Any]:
    """Restore a checkpoint into the given objects; returns the counters."""
    state_file = folder / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{folder} is not a complete checkpoint (no {STATE_FILE})")
    payload = json.loads(state_file.read_text())
    device = next(head.parameters()).device
    head.load_state_dict({k: v.to(device) for k, v in load_file(str(folder / "head.safetensors")).items()})
    flat = load_file(str(folder / "optimizer.safetensors"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in flat.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor if key == "step" else tensor.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": payload["optimizer"]["param_groups"]})
    rng_file = folder / f"rng_{rank}.safetensors"
    if rng_file.is_file():
        rng = load_file(str(rng_file))
        torch.set_rng_state(rng["cpu"])
        if torch.cuda.is_available():
            torch.cuda.set_rng_state_all([rng[k] for k in sorted(rng) if k.startswith("cuda")])
    return {k: v for k, v in payload.items() if k not in ("optimizer", "scheduler")}
