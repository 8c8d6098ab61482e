"""``nearid convert-weights``: tensors-only reading of published pickles, the names loaders expect, no code run."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nearid.common.convert import convert_pickles, target_name


class _Payload:
    """A pickle that would create a folder if it were ever unpickled with full pickle powers."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_names_follow_the_libraries() -> None:
    assert target_name("pytorch_model.bin") == "model.safetensors"
    assert target_name("pytorch_model-00001-of-00002.bin") == "model-00001-of-00002.safetensors"
    assert target_name("diffusion_pytorch_model-002.bin") == "diffusion_pytorch_model-002.safetensors"


def test_conversion_is_exact_and_runs_no_code(tmp_path: Path) -> None:
    weights = {"encoder.weight": torch.randn(4, 3), "encoder.bias": torch.randn(4)}
    weights["tied"] = weights["encoder.weight"]  # shared storage: safetensors needs its own copy
    (tmp_path / "ckpt").mkdir()
    torch.save(weights, tmp_path / "ckpt" / "pytorch_model.bin")
    (done,) = convert_pickles(tmp_path / "ckpt")
    assert done.target.name == "model.safetensors" and done.tensors == 3 and not done.skipped
    loaded = load_file(str(done.target))
    assert all(torch.equal(loaded[key], weights[key]) for key in weights)
    assert convert_pickles(tmp_path / "ckpt")[0].skipped  # a second run leaves the file alone

    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(tmp_path / "pwned"), protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        convert_pickles(hostile)
    assert not (tmp_path / "pwned").exists() and not list(hostile.glob("*.safetensors*"))

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    torch.save({"weight": torch.ones(2), "step": 7}, mixed / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="not tensors.*step"):
        convert_pickles(mixed)
