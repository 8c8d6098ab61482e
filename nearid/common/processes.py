"""Child processes that do not outlive their parent.

A worker pool or a launched trainer whose parent is killed would otherwise live on, and could later overwrite the
shards of a new run on the same root. On Linux the kernel delivers a signal to the child when its parent dies
(``PR_SET_PDEATHSIG``); elsewhere :func:`die_with_parent` is a no-op.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent exits; exit at once if ``parent_pid`` (the
    parent it was started by) is already gone. Meant as a pool initializer or a ``preexec_fn``."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the signal was armed
