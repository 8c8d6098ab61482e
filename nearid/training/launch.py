"""``nearid train``: run the training module under ``accelerate launch`` with sensible defaults."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def accelerate_command(
    config: str, num_processes: int = 1, resume: str | None = None, cpu: bool | None = None
) -> list[str]:
    """The ``accelerate launch ... -m nearid.training.train`` command line for this machine."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if not Path(config).is_file():
        raise FileNotFoundError(f"training config {config} does not exist")
    executable = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if executable is None:
        raise FileNotFoundError("the accelerate launcher is not installed (pip install accelerate)")
    if cpu is None:
        cpu = not _has_cuda()
    command = [executable, "launch", "--num_machines", "1", "--num_processes", str(num_processes)]
    command += ["--dynamo_backend", "no", "--mixed_precision", "no"]  # the config sets precision itself
    if cpu:
        command.append("--cpu")
    elif num_processes > 1:
        command.append("--multi_gpu")
    command += ["-m", "nearid.training.train", "--config", config]
    if resume:
        command += ["--resume", resume]
    return command


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def launch_training(config: str, num_processes: int = 1, resume: str | None = None, cpu: bool | None = None) -> int:
    """Run training in a child process (its output streams through); returns its exit status."""
    command = accelerate_command(config, num_processes, resume, cpu)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, env=env, check=False).returncode
