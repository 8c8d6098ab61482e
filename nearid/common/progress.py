"""Progress for long work: a live bar on a terminal, a few log lines everywhere else.

Under a flow, a worker or CI, stderr is a pipe, and a tqdm bar there is one line per refresh (hundreds per stage
in a flow log). :func:`progress` keeps tqdm's interface but, when stderr is not a terminal, writes a log line
with count, rate and ETA only when another tenth of the work is done or ``LOG_INTERVAL_S`` has passed, and once
at the end. ``-q`` (``NEARID_PROGRESS=off``, inherited by child processes) hides both kinds.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


logger = logging.getLogger("nearid.progress")

PROGRESS_ENV = "NEARID_PROGRESS"
"""``off`` hides progress; ``log`` forces log lines, ``bar`` forces live bars; unset: bars on a terminal only."""
LOG_INTERVAL_S = 60.0
"""Longest silence between two progress log lines of one task."""
LOG_MIN_GAP_S = 5.0
"""Shortest gap between two progress log lines (a fast task logs its start and end, not every tenth)."""
LOG_STEPS = 10
"""Progress is logged each time another 1/LOG_STEPS of the total is done."""


class _Discard:
    """A file that swallows what tqdm would print: log mode prints through ``logging`` instead."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class LogProgress(tqdm):
    """A tqdm bar that reports through ``logging`` at a bounded rate instead of redrawing a line.

    A bar that stays (``leave=True``) logs when another tenth is done (at most every ``LOG_MIN_GAP_S``), after
    ``LOG_INTERVAL_S`` of silence and at the end; a transient one (``leave=False``: one shard, one batch) only
    after a long silence, since the bar around it reports the progress.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._logged_at = time.monotonic()
        self._logged_step = 0
        self._finished = False
        kwargs.update(file=_Discard(), dynamic_ncols=False, ncols=0)
        super().__init__(*args, **kwargs)

    def _line(self) -> str:
        meter = dict(self.format_dict)
        meter.update(ncols=0, bar_format=None)
        return self.format_meter(**meter).strip()

    def _log(self) -> None:
        logger.info("%s", self._line())
        self._logged_at = time.monotonic()
        self._logged_step = int(self.n * LOG_STEPS // self.total) if self.total else 0

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if self.disable or self._finished or self.n == 0:
            return True
        quiet_for = time.monotonic() - self._logged_at
        if not self.leave:
            due = quiet_for >= LOG_INTERVAL_S
        else:
            step = int(self.n * LOG_STEPS // self.total) if self.total else 0
            due = quiet_for >= LOG_INTERVAL_S or (step > self._logged_step and quiet_for >= LOG_MIN_GAP_S)
            self._finished = bool(self.total) and self.n >= self.total
            due = due or self._finished
        if due:
            self._log()
        return True

    def close(self) -> None:
        if not self.disable and self.leave and not self._finished and self.n > 0:
            self._log()  # the final count of a bar that stops early or has no total
            self._finished = True
        super().close()


def progress_mode() -> str:
    """``bar``, ``log`` or ``off``, from ``NEARID_PROGRESS`` or whether stderr is a terminal."""
    mode = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if mode in ("bar", "log", "off"):
        return mode
    stream = sys.stderr
    return "bar" if stream is not None and hasattr(stream, "isatty") and stream.isatty() else "log"


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A progress bar over ``iterable`` (or updated by hand with ``total=``), shown as :func:`progress_mode` says.

    ``enabled=False`` (a command's ``--no-progress``) hides it like ``-q``.
    """
    mode = progress_mode() if enabled else "off"
    if mode == "bar":
        return tqdm(iterable, **kwargs)
    return LogProgress(iterable, disable=mode == "off", **kwargs)
