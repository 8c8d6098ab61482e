"""``nearid train``: run the training module under ``accelerate launch`` with sensible defaults.

Several processes always go through accelerate's multi-process launcher (torchrun), also on CPU: its CPU
launcher would start a single process. On CPU the children get ``ACCELERATE_USE_CPU`` and talk over gloo.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from nearid.common.processes import die_with_parent


TRAIN_MODULE = "nearid.training.train"


@dataclass(frozen=True)
class Launch:
    """How many processes on how many machines, and where they meet."""

    num_processes: int = 1
    cpu: bool | None = None
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int = 0

    def __post_init__(self) -> None:
        if self.num_processes < 1 or self.num_machines < 1:
            raise ValueError(
                f"num_processes and num_machines must be >= 1, got {self.num_processes}, {self.num_machines}"
            )
        if self.num_processes % self.num_machines:
            raise ValueError(
                f"{self.num_processes} processes cannot be spread evenly over {self.num_machines} machines"
            )
        if not 0 <= self.machine_rank < self.num_machines:
            raise ValueError(f"machine_rank must be in [0, {self.num_machines}), got {self.machine_rank}")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("training on several machines needs --main-process-ip (the address of machine rank 0)")
        if self.num_machines > 1 and not self.main_process_port:
            raise ValueError("training on several machines needs a fixed --main-process-port on every machine")


def accelerate_command(config: str, launch: Launch, resume: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``accelerate launch ... -m nearid.training.train`` command line and its environment."""
    if not Path(config).is_file():
        raise FileNotFoundError(f"training config {config} does not exist")
    executable = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if executable is None:
        raise FileNotFoundError("the accelerate launcher is not installed (pip install accelerate)")
    cpu = not _has_cuda() if launch.cpu is None else launch.cpu
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [executable, "launch", "--num_machines", str(launch.num_machines)]
    command += ["--num_processes", str(launch.num_processes)]
    command += ["--dynamo_backend", "no", "--mixed_precision", "no"]  # the config sets precision itself
    if launch.num_processes > 1 or launch.num_machines > 1:
        command += ["--multi_gpu", "--machine_rank", str(launch.machine_rank)]
        command += ["--main_process_port", str(launch.main_process_port)]
        if launch.main_process_ip:
            command += ["--main_process_ip", launch.main_process_ip]
        if cpu:
            env["ACCELERATE_USE_CPU"] = "true"  # torchrun children on CPU: gloo
            env.setdefault("OMP_NUM_THREADS", "1")  # one thread per process, or the processes fight for the cores
    elif cpu:
        command.append("--cpu")
    command += ["-m", TRAIN_MODULE, "--config", config]
    if resume:
        command += ["--resume", resume]
    return command, env


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def launch_training(config: str, launch: Launch, resume: str | None = None) -> int:
    """Run training in child processes (their output streams through); returns the launcher's exit status."""
    command, env = accelerate_command(config, launch, resume)
    # SIGTERM, not SIGKILL: the launcher must live long enough to stop its own workers
    die = partial(die_with_parent, os.getpid(), signal.SIGTERM)
    return subprocess.run(command, env=env, check=False, preexec_fn=die).returncode
