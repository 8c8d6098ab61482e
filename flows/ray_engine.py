"""Shard generation on an existing Ray cluster: one actor per GPU, its models resident, pulling shards.

The driver (the ``regenerate`` flow run) connects to the cluster, starts as many :class:`ShardActor` as the
cluster has GPUs (``NEARID_RAY_GPUS_PER_ACTOR`` each, default 1; ``0`` runs actors on CPUs), and hands the next
shard, in (configuration, shard) order, to whichever actor is free. An actor keeps one configuration's models
loaded until a shard of another configuration arrives, so each GPU loads each configuration once per run. Ray
restarts an actor that dies (``max_restarts``) and reruns its shard; a shard that fails with an error is reported,
not retried (it would fail the same way). Shards commit to the manifest exactly as ``nearid generate`` does, so
complete shards are skipped and a rerun redoes nothing that is done.

Cancelling the flow run stops the driver within seconds and kills the actors with their shards. Nothing here
starts a cluster: an address that answers nothing, or a cluster without the GPUs asked for, fails with a clear
error within a deadline instead of waiting forever. Every node runs the same nearid install (the worker image) and
reaches the dataset root and model folder at the same paths.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from flows.commands import CommandCancelled
from flows.settings import MissingExtraError
from flows.shards import ShardJob, ShardRunOptions, shard_locks


logger = logging.getLogger(__name__)

RAY_INSTALL_HINT = 'pip install "nearid[ray]" (the same ray version as the cluster)'
CONNECT_TIMEOUT_S = 10.0
DEFAULT_START_TIMEOUT_S = 300.0
"""How long actors may wait for their GPUs: long enough for a node to join, short enough to notice none will."""
WAIT_SLICE_S = 2.0
"""How often the driver looks up from waiting on shards (a cancelled run)."""


class RayUnavailable(ConnectionError):
    """No Ray cluster answers at the address."""


class RayResourcesError(RuntimeError):
    """The cluster cannot place the generator actors (not enough GPUs, or none free before the deadline)."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError(f"ray_address needs Ray: {RAY_INSTALL_HINT}") from exc
    return ray


def _probe(address: str, timeout_s: float) -> None:
    """Fail fast when nothing listens at ``host:port`` (Ray's own client retries for minutes)."""
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto": Ray finds the local cluster's address itself, or fails at once
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RayUnavailable(
            f"no Ray cluster answers at {address} ({exc}); start one with `ray start --head` or fix the address"
        ) from exc


def connect(address: str) -> Any:
    """Connect this process to the existing cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``);
    never starts a private one. Returns the ``ray`` module."""
    ray = _ray()
    _probe(address, CONNECT_TIMEOUT_S)
    if ray.is_initialized():
        ray.shutdown()
    try:
        ray.init(address=address, namespace="nearid", logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError as exc:
        raise RayUnavailable(f"no Ray cluster at {address}: {exc}") from exc
    return ray


class ShardActor:
    """Makes shards in its process; one configuration's models stay loaded between shards."""

    def __init__(self, options: ShardRunOptions) -> None:
        self.options = options
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        self.resident: Any = None

    def ready(self) -> str:
        return self.where

    def _device(self) -> str:
        if self.options.device != "auto":
            return self.options.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"  # Ray set CUDA_VISIBLE_DEVICES to this actor's GPUs

    def generate(self, job: ShardJob) -> dict[str, Any]:
        """Make one shard (skipped when complete by now); returns what happened, where and the model loads."""
        from generators.run import ResidentGenerator

        started = time.time()
        options = self.options
        if self.resident is None or self.resident.config.name != job.config:
            self.resident = None  # free the previous configuration's models before loading the next
            self.resident = ResidentGenerator(
                options.root,
                job.config,
                self._device(),
                options.dtype,
                options.model_dir,
                options.overrides,
                progress=False,
                splits=options.splits,
            )
        with shard_locks(options.root, [job.path], timeout_s=options.timeout_s):
            summary = self.resident.run(str(job.index), force=options.force)
        return {
            "path": job.path,
            "status": "written" if summary.shards_written else "skipped",
            "seconds": round(summary.seconds, 3),
            "worker": self.where,
            "model_loads": summary.model_loads,
            "load_seconds": round(summary.load_seconds, 3),
            "started": started,
            "ended": time.time(),
        }


def _settings() -> tuple[float, float]:
    gpus = float(os.environ.get("NEARID_RAY_GPUS_PER_ACTOR", "1"))
    start = float(os.environ.get("NEARID_RAY_START_TIMEOUT_S", str(DEFAULT_START_TIMEOUT_S)))
    if gpus < 0 or start <= 0:
        raise ValueError(f"NEARID_RAY_GPUS_PER_ACTOR must be >= 0, NEARID_RAY_START_TIMEOUT_S > 0: {gpus}, {start}")
    return gpus, start


def generate_on_ray(
    address: str,
    jobs: Sequence[ShardJob],
    options: ShardRunOptions,
    log: logging.Logger | logging.LoggerAdapter | None = None,
    max_actors: int | None = None,
) -> list[dict[str, Any]]:
    """Make ``jobs`` on the Ray cluster at ``address`` (module docstring); returns one record per shard, or
    raises listing the shards that failed."""
    log = log or logger
    gpus_per_actor, start_timeout_s = _settings()
    ray = connect(address)
    actors: list[Any] = []
    try:
        resources = ray.cluster_resources()
        if gpus_per_actor > 0:
            total = resources.get("GPU", 0.0)
            if total < gpus_per_actor:
                raise RayResourcesError(
                    f"the Ray cluster at {address} has {total:g} GPUs and each generator actor needs "
                    f"{gpus_per_actor:g} (NEARID_RAY_GPUS_PER_ACTOR; 0 runs on CPUs)"
                )
            count = int(total // gpus_per_actor)
        else:
            count = max(1, int(resources.get("CPU", 1.0)))
        count = min(count, len(jobs), max_actors or count)
        remote = ray.remote(ShardActor).options(num_gpus=gpus_per_actor, max_restarts=2, max_task_retries=2)
        actors = [remote.remote(options) for _ in range(count)]
        ready, pending = ray.wait([a.ready.remote() for a in actors], num_returns=count, timeout=start_timeout_s)
        if pending:
            raise RayResourcesError(
                f"{len(pending)} of {count} generator actors found no free {gpus_per_actor:g} GPU within "
                f"{start_timeout_s:.0f}s on the Ray cluster at {address} (free now: {ray.available_resources()})"
            )
        log.info("%d generator actors on %s: %s", count, address, ", ".join(ray.get(ready)))
        from flows.cancellation import cancel_watch

        return _dispatch(ray, actors, jobs, options.timeout_s, log, cancel_watch())
    finally:
        for actor in actors:
            ray.kill(actor)
        ray.shutdown()


def _dispatch(
    ray: Any,
    actors: list[Any],
    jobs: Sequence[ShardJob],
    timeout_s: float,
    log: Any,
    stop: Callable[[], str | None] | None = None,
) -> list[dict[str, Any]]:
    """Give the next shard to the first free actor until none is left; a shard ends within ``timeout_s``. ``stop``
    (the flow run's cancel watch) is asked every couple of seconds: a reason ends the run, and the caller kills the
    actors with their shards."""
    queue = sorted(jobs, key=lambda job: (job.config, job.index))  # each actor goes configuration by configuration
    idle, running = list(actors), {}
    results, failed = [], []
    while queue or running:
        if not idle and not running:  # every actor died
            failed += [f"{job.path}: no generator actor left" for job in queue]
            break
        while queue and idle:
            actor, job = idle.pop(0), queue.pop(0)
            running[actor.generate.remote(job)] = (actor, job)
        deadline = time.monotonic() + timeout_s
        while not (done := ray.wait(list(running), num_returns=1, timeout=WAIT_SLICE_S)[0]):
            reason = stop() if stop is not None else None
            if reason:
                raise CommandCancelled(f"stopped {len(running)} shards on Ray: {reason}")
            if time.monotonic() > deadline:
                late = [j.path for _, j in running.values()]
                raise TimeoutError(f"no shard finished within {timeout_s:.0f}s on Ray: {late}")
        actor, job = running.pop(done[0])
        try:
            record = ray.get(done[0])
        except ray.exceptions.RayActorError as exc:  # restarts used up: this actor is gone
            failed.append(f"{job.path}: its actor died ({exc})")
            continue
        except ray.exceptions.RayTaskError as exc:
            failed.append(f"{job.path}: {exc.cause if hasattr(exc, 'cause') else exc}")
        else:
            results.append(record)
            log.info("%s %s on %s in %.1fs", job.path, record["status"], record["worker"], record["seconds"])
        idle.append(actor)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} shards failed on Ray:\n" + "\n".join(failed))
    return results
