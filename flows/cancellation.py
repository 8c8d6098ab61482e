"""Whether the Prefect flow run this process works for was cancelled, so that its child processes stop with it.

Cancelling a run on a process worker sends SIGTERM to the flow run's process, but Prefect's thread-pool task
runner then waits for the running task threads before the process can end, and a thread blocked on a child
(``nearid generate``, ``accelerate launch``) never sees the signal: the run sat in ``Cancelling`` until the
worker's SIGKILL 30 s later, and the child's own helpers outlived it. :func:`flows.commands.run_streaming` therefore
asks a :class:`CancelWatch` every second, which reads the run's state from the API every ``CHECK_EVERY_S``,
and kills the child's process group once the run is ``Cancelling`` or ``Cancelled``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence


logger = logging.getLogger(__name__)

CHECK_EVERY_S = 2.0
STOP_STATES = ("CANCELLING", "CANCELLED")


class CancelWatch:
    """A ``stop`` callback for :func:`flows.commands.run_streaming`: the reason to stop, or None to go on.

    It reads the states of ``run_ids`` at most every ``every_s``; an API error never stops a child.
    """

    def __init__(self, run_ids: Sequence[str], every_s: float = CHECK_EVERY_S) -> None:
        if not run_ids:
            raise ValueError("a cancel watch needs at least one flow run id")
        self.run_ids = list(dict.fromkeys(run_ids))
        self.every_s = every_s
        self._next = 0.0

    def __call__(self) -> str | None:
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.every_s
        try:
            states = self._states()
        except Exception as exc:  # an API outage must not kill a six-hour shard
            logger.debug("could not read the states of flow runs %s: %s", self.run_ids, exc)
            return None
        for name, state_type, state_name in states:
            if state_type in STOP_STATES:
                return f"flow run {name!r} is {state_name}"
        return None

    def _states(self) -> list[tuple[str, str, str]]:
        from uuid import UUID

        from prefect import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        wanted = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id) for run_id in self.run_ids]))
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=wanted)
        return [(run.name, run.state.type.value, run.state.name) for run in runs if run.state is not None]


def cancel_watch() -> CancelWatch | None:
    """A watch on the current flow run and on the deployment run this process was started for, or None outside
    Prefect (no Prefect import, no run context, no ``PREFECT__FLOW_RUN_ID``)."""
    if "prefect.context" not in sys.modules:  # not imported: this process runs no flow
        return None
    from prefect.context import FlowRunContext

    run_ids = []
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        run_ids.append(str(context.flow_run.id))
    if os.environ.get("PREFECT__FLOW_RUN_ID"):  # set by the worker for the run it started
        run_ids.append(os.environ["PREFECT__FLOW_RUN_ID"])
    return CancelWatch(run_ids) if run_ids else None
