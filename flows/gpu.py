"""GPU slots by process: a host-wide slot queue and a child-process runner that streams its logs.

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
import io
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from nearid.common.processes import die_with_parent


logger = logging.getLogger(__name__)

Logger = logging.Logger | logging.LoggerAdapter


class SlotTimeout(TimeoutError):
    """No slot became free within the wait allowed."""


class CommandFailed(RuntimeError):
    """A child process exited with a non-zero status; carries the tail of its output."""

    def __init__(self, message: str, returncode: int | None, tail: Sequence[str]) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.tail = list(tail)


class CommandTimeout(TimeoutError):
    """A child process ran past its deadline and its process group was killed."""

    def __init__(self, message: str, tail: Sequence[str]) -> None:
        super().__init__(message)
        self.tail = list(tail)


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
            fd = try_lock(self.lock_path(slot))
            if fd is None:
                continue
            note = f"pid={os.getpid()} host={os.uname().nodename} holder={holder} since={time.time():.3f}\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
            return HeldSlot(slot, fd)
        return None

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


@dataclass(frozen=True)
class CommandResult:
    """A child process that exited with status 0."""

    returncode: int
    seconds: float
    tail: list[str]


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _kill_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after ``grace_s``."""
    if _signal_group(proc.pid, signal.SIGTERM):
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def run_streaming(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    log: Logger | None = None,
    label: str = "",
    cwd: str | os.PathLike[str] | None = None,
    tail_lines: int = 40,
    kill_grace_s: float = 5.0,
    pass_fds: Sequence[int] = (),
) -> CommandResult:
    """Run ``cmd`` in its own process group, logging each output line as it comes, within a deadline.

    stdout and stderr are merged, in order. Past ``timeout_s`` the whole group gets SIGTERM, then
    SIGKILL after ``kill_grace_s``, and :class:`CommandTimeout` is raised; a non-zero exit raises
    :class:`CommandFailed`. Both carry the last ``tail_lines`` lines. Any exception in the caller
    (a cancelled run, Ctrl-C) kills the group too, so no GPU job is left behind; so does a normal exit,
    for helpers the child left running.
    """
    log = log or logger
    prefix = f"[{label}] " if label else ""
    tail: deque[str] = deque(maxlen=tail_lines)
    start = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
        preexec_fn=partial(die_with_parent, os.getpid(), signal.SIGTERM),  # a killed worker takes its child along
    )

    def pump() -> None:
        assert proc.stdout is not None
        # lines end at "\n" only: a bar redrawn with "\r" is one line, of which the last state is kept
        for raw in io.TextIOWrapper(proc.stdout, encoding="utf-8", errors="replace", newline="\n"):
            states = [part for part in raw.rstrip("\n").split("\r") if part.strip()]
            if states:
                tail.append(states[-1])
                log.info("%s%s", prefix, states[-1])

    reader = threading.Thread(target=pump, name=f"stream-{proc.pid}", daemon=True)
    reader.start()
    try:
        returncode = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc, kill_grace_s)
        reader.join(timeout=5)
        text = "\n".join(tail)
        raise CommandTimeout(
            f"{prefix}{cmd[0]} ran past its {timeout_s:.0f}s deadline; killed its process group. Last output:\n{text}",
            tail,
        ) from None
    except BaseException:
        _kill_group(proc, kill_grace_s)
        raise
    finally:
        if proc.returncode is not None:
            _signal_group(proc.pid, signal.SIGKILL)  # helpers the child left in its group
    reader.join(timeout=5)
    seconds = time.monotonic() - start
    if returncode != 0:
        text = "\n".join(tail)
        message = f"{prefix}{cmd[0]} exited with status {returncode}. Last output:\n{text}"
        raise CommandFailed(message, returncode, tail)
    return CommandResult(returncode, seconds, list(tail))


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
