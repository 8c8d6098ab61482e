"""Child commands: run one in its own process group, stream its output into a log line by line, within a deadline,
and stop it (the whole group) on a deadline, a cancel request or any error of the caller.

A child dies with the process that started it (``PR_SET_PDEATHSIG``), so a killed worker takes its GPU jobs along.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from nearid.common.processes import die_with_parent


logger = logging.getLogger(__name__)

Logger = logging.Logger | logging.LoggerAdapter


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


class CommandCancelled(RuntimeError):
    """A child process was stopped on request (its flow run was cancelled) and its process group killed."""

    def __init__(self, message: str, tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.tail = list(tail)


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


def _wait(proc: subprocess.Popen, timeout_s: float | None, stop: Callable[[], str | None] | None) -> int:
    """``proc.wait(timeout_s)``, asking ``stop`` every second: a reason from it raises :class:`CommandCancelled`."""
    if stop is None:
        return proc.wait(timeout=timeout_s)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return proc.wait(timeout=1.0 if left is None else min(1.0, left))
        except subprocess.TimeoutExpired:
            if left is not None and left <= 1.0:
                raise
        reason = stop()
        if reason:
            raise CommandCancelled(f"stopped, cancel requested: {reason}")


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
    stop: Callable[[], str | None] | None = None,
) -> CommandResult:
    """Run ``cmd`` in its own process group, logging each output line as it comes, within a deadline.

    stdout and stderr are merged, in order. Past ``timeout_s`` the whole group gets SIGTERM, then
    SIGKILL after ``kill_grace_s``, and :class:`CommandTimeout` is raised; a non-zero exit raises
    :class:`CommandFailed`. Both carry the last ``tail_lines`` lines. Any exception in the caller
    (a cancelled run, Ctrl-C) kills the group too, so no GPU job is left behind; so does a normal exit,
    for helpers the child left running. ``stop`` is asked every second for a reason to stop (the group is then
    killed and :class:`CommandCancelled` raised); by default it says so once the Prefect flow run this process
    works for is cancelled (:func:`flows.cancellation.cancel_watch`), since a task thread never sees its SIGTERM.
    """
    if stop is None:
        from flows.cancellation import cancel_watch

        stop = cancel_watch()
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
        returncode = _wait(proc, timeout_s, stop)
    except CommandCancelled as stopped:
        _kill_group(proc, kill_grace_s)
        reader.join(timeout=5)
        text = "\n".join(tail)
        raise CommandCancelled(
            f"{prefix}{cmd[0]} {stopped}; killed its process group. Last output:\n{text}", tail
        ) from None
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
