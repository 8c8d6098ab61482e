"""GPU slots by process: a host-wide slot queue, and running a child command pinned to a slot.

A GPU is given to work by starting a child process with ``CUDA_VISIBLE_DEVICES`` set to one device,
never by Prefect tag limits (they say how many, not which). Slots are file locks in a folder shared by
every process on the host (``NEARID_SLOT_DIR``, default ``<tmp>/nearid-slots-<uid>``), so tasks in
threads of one flow run and tasks in separate worker processes never share a device. A lock is held
by an open file and the kernel drops it when the last holder dies, so a crash never leaks a slot; the
child inherits the lock, so a child that outlives its parent keeps its GPU marked busy.

Which devices become slots, first match wins:

1. ``NEARID_GPU_DEVICES``: an explicit list of ``CUDA_VISIBLE_DEVICES`` values, e.g. ``0,2,3``;
2. ``NEARID_GPU_SLOTS``: a count ``N``, meaning devices ``0 .. N-1`` (``0`` forces CPU slots);
3. ``CUDA_VISIBLE_DEVICES`` when set (a worker pinned to its GPUs; an empty value means no GPU);
4. ``nvidia-smi -L`` (no torch import), else no GPU.

Without GPUs there are ``NEARID_CPU_SLOTS`` CPU slots (default 1), whose children see
``CUDA_VISIBLE_DEVICES=""`` and run on the CPU, each with its share of the cores; a GPU worker sets
``NEARID_REQUIRE_GPU=1`` so that finding no GPU is an error instead of a silent CPU run.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flows.commands import CommandResult, Logger, run_streaming


logger = logging.getLogger(__name__)


class SlotTimeout(TimeoutError):
    """No slot became free within the wait allowed."""


@dataclass(frozen=True)
class Slot:
    """One unit of accelerator capacity: a CUDA device id, or ``None`` for a CPU slot."""

    name: str
    device: str | None
    threads: int = 0
    """CPU threads a CPU slot's child may use (its share of the cores; 0: leave torch's default)."""

    @property
    def is_gpu(self) -> bool:
        return self.device is not None

    @property
    def torch_device(self) -> str:
        """The device a child should use: ``cuda`` (its only visible GPU) or ``cpu``."""
        return "cuda" if self.is_gpu else "cpu"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A child environment pinned to this slot (``os.environ`` itself is never changed)."""
        env = dict(os.environ if base is None else base)
        env["CUDA_VISIBLE_DEVICES"] = self.device or ""
        env["PYTHONUNBUFFERED"] = "1"
        if self.threads and "OMP_NUM_THREADS" not in env:  # oversubscribed CPU slots burn ~17x the CPU
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        return env


def count_gpus(timeout_s: float = 10.0) -> int:
    """GPUs that ``nvidia-smi -L`` lists; 0 when it is missing or fails (no torch import)."""
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if done.returncode != 0:
        return 0
    return sum(1 for line in done.stdout.splitlines() if line.startswith("GPU "))


def _device_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def slot_devices(environ: Mapping[str, str] | None = None) -> list[str | None]:
    """The devices that become slots on this host (see the module docstring for the order)."""
    env = os.environ if environ is None else environ
    if env.get("NEARID_GPU_DEVICES", "").strip():
        devices: list[str] = _device_list(env["NEARID_GPU_DEVICES"])
    elif env.get("NEARID_GPU_SLOTS", "").strip():
        try:
            count = int(env["NEARID_GPU_SLOTS"])
        except ValueError as exc:
            raise ValueError(f"NEARID_GPU_SLOTS must be a count, got {env['NEARID_GPU_SLOTS']!r}") from exc
        if count < 0:
            raise ValueError(f"NEARID_GPU_SLOTS must be >= 0, got {count}")
        devices = [str(i) for i in range(count)]
    elif "CUDA_VISIBLE_DEVICES" in env:
        devices = _device_list(env["CUDA_VISIBLE_DEVICES"])
    else:
        devices = [str(i) for i in range(count_gpus())]
    if devices:
        return list(devices)
    if env.get("NEARID_REQUIRE_GPU", "").strip().lower() in ("1", "true", "yes"):
        raise RuntimeError(
            "NEARID_REQUIRE_GPU is set but this worker sees no GPU (no NEARID_GPU_DEVICES, no CUDA_VISIBLE_DEVICES, "
            "nvidia-smi lists none): refusing to run GPU work on the CPU in float32"
        )
    cpu = int(env.get("NEARID_CPU_SLOTS", "1") or "1")
    if cpu < 1:
        raise ValueError(f"NEARID_CPU_SLOTS must be >= 1, got {cpu}")
    return [None] * cpu


def default_slot_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The host-wide lock folder: ``NEARID_SLOT_DIR`` or ``<tmp>/nearid-slots-<uid>``."""
    env = os.environ if environ is None else environ
    if env.get("NEARID_SLOT_DIR"):
        return Path(env["NEARID_SLOT_DIR"]).absolute()
    return Path(tempfile.gettempdir()) / f"nearid-slots-{os.getuid()}"


def _lock_name(device: str | None, index: int) -> str:
    if device is None:
        return f"cpu-{index}"
    return "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", device)


@dataclass(frozen=True)
class HeldSlot:
    """A slot while it is held: the slot plus the descriptor of the locked file that holds it."""

    slot: Slot
    fd: int


def try_lock(path: Path) -> int | None:
    """Open and exclusively ``flock`` ``path`` without waiting; the fd on success, else None.

    Separate ``open`` calls conflict even inside one process, so this excludes threads too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def release_lock(fd: int) -> None:
    """Unlock and close a descriptor from :func:`try_lock`."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def file_lock(path: Path, timeout_s: float | None = None, poll_s: float = 0.1) -> Iterator[int]:
    """Hold an exclusive lock on ``path`` (waiting at most ``timeout_s``); yields the descriptor."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while (fd := try_lock(path)) is None:
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{path} stayed locked for {timeout_s:.0f}s")
        time.sleep(poll_s)
    try:
        yield fd
    finally:
        release_lock(fd)


class SlotPool:
    """Exclusive slots shared by every process on the host through lock files in ``lock_dir``."""

    def __init__(self, devices: Sequence[str | None], lock_dir: str | os.PathLike[str]) -> None:
        if not devices:
            raise ValueError("a slot pool needs at least one device (None for a CPU slot)")
        gpus = [d for d in devices if d is not None]
        if gpus and len(gpus) != len(devices):
            raise ValueError(f"mix of GPU and CPU slots in {list(devices)}: give one kind")
        if len(set(gpus)) != len(gpus):
            raise ValueError(f"duplicate devices in {list(devices)}")
        self.lock_dir = Path(lock_dir).absolute()
        threads = 0 if gpus else max(1, (os.cpu_count() or 1) // len(devices))  # CPU slots share the cores
        self.slots = [Slot(_lock_name(device, i), device, threads) for i, device in enumerate(devices)]
        self._next = 0
        self._next_guard = threading.Lock()

    @classmethod
    def from_environment(
        cls, lock_dir: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> SlotPool:
        """The pool this host offers (:func:`slot_devices`), locked in ``lock_dir`` or the default folder."""
        return cls(slot_devices(environ), lock_dir or default_slot_dir(environ))

    def __len__(self) -> int:
        return len(self.slots)

    def lock_path(self, slot: Slot) -> Path:
        return self.lock_dir / f"{slot.name}.lock"

    def try_acquire(self, holder: str = "") -> HeldSlot | None:
        """A free slot, locked for the caller, or None when every slot is busy."""
        with self._next_guard:  # start where the last search stopped, so slots are used in turn
            start = self._next
            self._next = (self._next + 1) % len(self.slots)
        for k in range(len(self.slots)):
            slot = self.slots[(start + k) % len(self.slots)]
            if (held := self._take(slot, holder)) is not None:
                return held
        return None

    def _take(self, slot: Slot, holder: str) -> HeldSlot | None:
        """Lock ``slot`` without waiting and note who holds it; None when it is busy."""
        fd = try_lock(self.lock_path(slot))
        if fd is None:
            return None
        note = f"pid={os.getpid()} host={os.uname().nodename} holder={holder} since={time.time():.3f}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        return HeldSlot(slot, fd)

    def try_acquire_many(self, count: int, holder: str = "") -> list[HeldSlot] | None:
        """``count`` free slots, all locked for the caller, or None (holding nothing) when fewer are free.

        All or nothing, never hold-and-wait: slots taken on the way are given back at once when the search
        falls short, so two multi-slot tasks can never each sit on part of what the other needs.
        """
        if not 1 <= count <= len(self.slots):
            raise ValueError(f"{count} slots asked of a pool of {len(self.slots)} ({self.lock_dir})")
        held: list[HeldSlot] = []
        try:
            for slot in self.slots:  # in a fixed order: the lowest free devices
                if (taken := self._take(slot, holder)) is not None:
                    held.append(taken)
                if len(held) == count:
                    return held
        except BaseException:
            _release_all(held)
            raise
        _release_all(held)
        return None

    @contextmanager
    def acquire_many(
        self, count: int, timeout_s: float | None = None, poll_s: float = 0.2, holder: str = ""
    ) -> Iterator[list[HeldSlot]]:
        """Wait (at most ``timeout_s``) until ``count`` slots are free together and hold them for the block."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (held := self.try_acquire_many(count, holder)) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise SlotTimeout(
                    f"could not take {count} slot(s) at once among {len(self)} in {self.lock_dir} "
                    f"after {timeout_s:.0f}s"
                )
            time.sleep(poll_s)
        try:
            yield held
        finally:
            _release_all(held)

    @contextmanager
    def acquire(self, timeout_s: float | None = None, poll_s: float = 0.2, holder: str = "") -> Iterator[HeldSlot]:
        """Wait (at most ``timeout_s``) for a free slot and hold it for the ``with`` block."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (held := self.try_acquire(holder)) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise SlotTimeout(f"no free slot among {len(self)} in {self.lock_dir} after {timeout_s:.0f}s")
            time.sleep(poll_s)
        try:
            yield held
        finally:
            release_lock(held.fd)


def _release_all(held: Sequence[HeldSlot]) -> None:
    for item in held:
        release_lock(item.fd)


def slots_env(slots: Sequence[Slot], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child environment pinned to several slots: ``CUDA_VISIBLE_DEVICES=0,1,...`` for GPU slots; for CPU slots
    no GPU and one slot's share of the cores per process (its own processes, e.g. one per slot)."""
    if not slots:
        raise ValueError("slots_env needs at least one slot")
    env = slots[0].env(base)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.device or "" for slot in slots) if slots[0].is_gpu else ""
    return env


def run_in_slot(
    pool: SlotPool,
    command: Callable[[Slot], Sequence[str]],
    timeout_s: float | None = None,
    acquire_timeout_s: float | None = None,
    log: Logger | None = None,
    label: str = "",
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> CommandResult:
    """Take a slot, run ``command(slot)`` pinned to it (:func:`run_streaming`), give the slot back.

    The child inherits the slot's lock, so the slot stays busy for as long as the child lives, even
    when this process dies first. The slot is released on success, failure and timeout alike.
    """
    log = log or logger
    with pool.acquire(timeout_s=acquire_timeout_s, holder=label) as held:
        where = f"GPU {held.slot.device}" if held.slot.is_gpu else "CPU"
        log.info("%s: running on %s (slot %s)", label or "command", where, held.slot.name)
        return run_streaming(
            command(held.slot),
            env=held.slot.env(env),
            timeout_s=timeout_s,
            log=log,
            label=label,
            cwd=cwd,
            pass_fds=(held.fd,),
        )
