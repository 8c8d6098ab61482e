"""Fan-out to a work pool: each shard group becomes a flow run of a deployment (``regenerate/shards``), submitted
with ``run_deployment`` to that deployment's pool, where every worker (one per GPU, on any host) takes groups. The
submitting run waits for all of them; the manifest, not the child runs' states, says which shards are done. A group
whose run crashed (its worker died) is submitted once more; cancelling the submitting run cancels its groups' runs.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.commands import CommandCancelled
from flows.shards import ShardGroup, ShardRunOptions, gather, is_complete


POLL_S = 2.0


class ChildRunFailed(RuntimeError):
    """A flow run submitted to the work pool ended in a state other than Completed."""

    def __init__(self, message: str, crashed: bool) -> None:
        super().__init__(message)
        self.crashed = crashed


def _retry_when_crashed(task: Any, task_run: Any, state: Any) -> bool:
    """Resubmit a group whose flow run crashed (its worker or machine died); one that failed already had its
    own retries."""
    failure = state.result(raise_on_failure=False)
    return isinstance(failure, ChildRunFailed) and failure.crashed


@task(
    name="submit-shards", task_run_name="{group.label}", cache_policy=NO_CACHE, retry_condition_fn=_retry_when_crashed
)
def submit_group(group: ShardGroup, options: ShardRunOptions, deployment: str, retries: int) -> list[dict[str, Any]]:
    """Run a group as a flow run of ``deployment`` on its work pool and wait for it (a worker of the pool runs
    it on its own GPU); returns what happened to each shard."""
    from prefect.deployments import run_deployment

    parameters = {
        "root": options.root,
        "configurations": [group.config],
        "shards": group.indices,
        "force": options.force,
        "model_dir": options.model_dir,
        "device": options.device,
        "dtype": options.dtype,
        "overrides": options.overrides,
        "splits": options.splits,
        "shard_timeout_s": options.timeout_s,
        "retries": retries,
        "validate_at_end": False,
        "fan_out": None,
        "shards_per_task": len(group.jobs),  # the whole group in one child: one model load on that worker
    }
    before = _committed_generations(options.root, group)
    run = run_deployment(deployment, parameters=parameters, flow_run_name=group.label, timeout=0)
    state = _await_run(run, group.label)
    if state is None or not state.is_completed():
        name = state.name if state else "unknown"
        raise ChildRunFailed(
            f"{group.label}: flow run {run.name} ({run.id}) of {deployment} ended {name}: "
            f"{state.message if state else ''}",
            crashed=bool(state and state.is_crashed()),
        )
    missing = [job.path for job in group.jobs if not is_complete(options.root, job)]
    if missing:  # the manifest, not the run's state, says what is done
        raise RuntimeError(f"{group.label}: flow run {run.name} completed but {missing} are not complete")
    after = _committed_generations(options.root, group)
    return [
        {"path": job.path, "status": "written" if after[job.path] != before[job.path] else "skipped", "seconds": 0.0}
        for job in group.jobs
    ]


def _await_run(run: Any, label: str, poll_s: float = POLL_S) -> Any:
    """The final state of the submitted ``run``; when the run that submitted it is cancelled meanwhile, the submitted
    one is cancelled too (its worker then stops its child) and :class:`CommandCancelled` is raised."""
    from prefect import get_client
    from prefect.states import Cancelling

    from flows.cancellation import cancel_watch

    stop = cancel_watch()
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run.id).state
            if state is not None and state.is_final():
                return state
            reason = stop() if stop is not None else None
            if reason:
                client.set_flow_run_state(run.id, Cancelling(message=f"the run that submitted it stopped: {reason}"))
                raise CommandCancelled(f"{label}: {reason}; cancelled its flow run {run.name} ({run.id})")
            time.sleep(poll_s)


def _committed_generations(root: str, group: ShardGroup) -> dict[str, int | None]:
    """The manifest generation that committed each shard of ``group`` (None: not there)."""
    from storage import load_manifest

    shards = load_manifest(root).shards
    return {job.path: shards[job.path].generation if job.path in shards else None for job in group.jobs}


def pool_width(deployment: str) -> int:
    """Online workers of ``deployment``'s work pool (each one GPU in the documented fleet), at least 1."""
    from prefect import get_client
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus
    from prefect.exceptions import ObjectNotFound

    from flows.logs import run_logger

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_deployment_by_name(deployment).work_pool_name
        except ObjectNotFound:
            raise ValueError(
                f"fan_out: no deployment {deployment!r} on this server; create it with `prefect deploy --all` "
                "(prefect.yaml), or run without fan_out"
            ) from None
        if not pool:
            raise ValueError(f"fan_out: deployment {deployment} has no work pool to fan out to")
        online = WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"]))
        workers = len(client.read_workers_for_work_pool(pool, worker_filter=online))
    if not workers:
        run_logger().warning("no worker of pool %s is online: the shard groups wait in its queue for one", pool)
    return max(1, workers)


@flow(name="fan-out-shards")
def fan_out_flow(
    groups: list[ShardGroup], options: ShardRunOptions, deployment: str, retries: int = 1
) -> list[dict[str, Any]]:
    """Submit every group to ``deployment``'s work pool at once and wait for all of them."""
    submit = submit_group.with_options(retries=1, retry_delay_seconds=5)
    futures = [submit.submit(group, options, deployment, retries) for group in groups]
    return gather(groups, futures)
