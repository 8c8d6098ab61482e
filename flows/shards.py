"""Shards of a regeneration run: what to make (the plan and its hashes), how shards are grouped so each place
loads a configuration's models once, how one run's options travel, and the per-shard locks that keep two runs from
writing one shard. Shared by every engine (:mod:`flows.regenerate`, :mod:`flows.fan_out`, :mod:`flows.ray_engine`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.gpu import file_lock


DEFAULT_SHARD_TIMEOUT_S = 6 * 3600.0
"""A shard's deadline: the slowest paper configuration at 1,328 px on 256 identities stays well inside."""

LOCK_DIR = ".locks"


@dataclass(frozen=True)
class ShardJob:
    """One distractor shard to make: its configuration, index, path and expected config hash."""

    config: str
    index: int
    path: str
    config_hash: str
    complete: bool = False


@dataclass(frozen=True)
class ShardGroup:
    """Shards of one configuration made by one process, which loads the models once for all of them."""

    config: str
    jobs: tuple[ShardJob, ...]

    def __post_init__(self) -> None:
        if not self.jobs or any(job.config != self.config for job in self.jobs):
            raise ValueError(f"a shard group holds one or more shards of {self.config!r} only")

    @property
    def indices(self) -> list[int]:
        return [job.index for job in self.jobs]

    @property
    def label(self) -> str:
        """``config/00003``, ``config/00000-00003`` (a run of shards) or ``config/00001,00004``."""
        first, last = self.indices[0], self.indices[-1]
        if len(self.jobs) == 1:
            return f"{self.config}/{first:05d}"
        if self.indices == list(range(first, last + 1)):
            return f"{self.config}/{first:05d}-{last:05d}"
        return f"{self.config}/" + ",".join(f"{k:05d}" for k in self.indices)


def group_shards(jobs: Sequence[ShardJob], width: int, shards_per_task: int | None = None) -> list[ShardGroup]:
    """Cut each configuration's shards into ``width`` contiguous groups of near-equal size (one model load per
    place that runs them), or into groups of ``shards_per_task`` shards when given."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if shards_per_task is not None and shards_per_task < 1:
        raise ValueError(f"shards_per_task must be >= 1, got {shards_per_task}")
    by_config: dict[str, list[ShardJob]] = {}
    for job in jobs:
        by_config.setdefault(job.config, []).append(job)
    groups = []
    for config, mine in by_config.items():
        mine.sort(key=lambda job: job.index)
        count = -(-len(mine) // shards_per_task) if shards_per_task else min(width, len(mine))
        cuts = [-(-k * len(mine) // count) for k in range(count + 1)]  # the first groups take the remainder
        groups += [ShardGroup(config, tuple(mine[a:b])) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
    return groups


@dataclass(frozen=True)
class ShardRunOptions:
    """How a shard task runs its child process (the same for every shard of a run)."""

    root: str
    force: bool = False
    model_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)
    splits: list[str] | None = None
    timeout_s: float = DEFAULT_SHARD_TIMEOUT_S
    slot_dir: str | None = None


def shard_selection(shards: str | int | Sequence[int] | None) -> str | None:
    """A flow parameter (``"0-3,7"``, ``3``, ``[3, 7]`` or None for all) as ``nearid generate --shards`` text."""
    if shards is None or isinstance(shards, str):
        return shards
    if isinstance(shards, int):
        return str(shards)
    return ",".join(str(int(k)) for k in shards)


def split_selection(splits: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"val,test"``, ``["test"]`` or None as the sorted tuple ``nearid generate --splits`` hashes."""
    if not splits:
        return None
    names = splits.split(",") if isinstance(splits, str) else list(splits)
    chosen = tuple(sorted({name.strip() for name in names if name.strip()}))
    unknown = sorted(set(chosen) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"unknown splits {unknown}: use train, val, test")
    return chosen or None


def plan_shards(
    root: str,
    configurations: Sequence[str],
    shards: str | Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    splits: str | Sequence[str] | None = None,
) -> list[ShardJob]:
    """Every selected (configuration, shard) with the config hash ``nearid generate`` would record.

    The plan and its hashes come from :func:`generators.run.shard_plan`, the formula ``nearid generate``
    records; ``complete`` says whether the manifest already lists the shard with that hash. Each task
    also checks the hash its child committed, so a drift would fail loudly.
    """
    from generators.registry import get_config
    from generators.run import prompt_book, shard_plan
    from storage import load_manifest

    manifest = load_manifest(root)
    jobs = []
    for name in configurations:
        config = get_config(name).with_overrides(**(overrides or {}))
        for planned in shard_plan(
            root, config, shard_selection(shards), split_selection(splits), prompt_book(root, config)
        ):
            complete = manifest.is_complete(root, planned.path, planned.digest)
            jobs.append(ShardJob(config.name, planned.index, planned.path, planned.digest, complete))
    return jobs


def prune_stale_shards(root: str, configurations: Sequence[str], planned: Sequence[ShardJob]) -> list[str]:
    """Drop manifest entries of these configurations' tables that no planned shard covers (fewer
    identity shards than before), with their rejects; returns the dropped paths."""
    from generators.shard_job import rejects_path
    from storage import distractors_table, load_manifest
    from storage.manifest import drop_shards

    manifest = load_manifest(root)
    wanted = {job.path for job in planned}
    stale = []
    for config in configurations:
        for entry in manifest.table(distractors_table(config)):
            if entry.path not in wanted:
                index = int(entry.path.rsplit("-", 1)[1].split(".")[0])
                stale += [entry.path, rejects_path(config, index)]
    stale = [path for path in stale if path in manifest.shards]
    if stale:
        drop_shards(root, stale)
    return stale


@contextmanager
def shard_locks(root: str, paths: Sequence[str], timeout_s: float | None) -> Iterator[None]:
    """Hold ``ROOT/.locks/<path>.lock`` of every path (in sorted order, so two groups never deadlock), so two
    runs never write one shard at once: a file lock on local disks and NFS, a lock object on S3 buckets with
    conditional writes (:mod:`storage.object_lock`); other stores have none (one run per root at a time there).
    """
    from storage import object_lock, supports_locking
    from storage.fs import is_local, join, resolve

    fs, base = resolve(root)
    with ExitStack() as held:
        for path in sorted(paths):
            name = join(LOCK_DIR, path + ".lock")
            if is_local(fs):
                held.enter_context(file_lock(Path(join(base, name)), timeout_s=timeout_s))
            elif supports_locking(root):
                held.enter_context(object_lock(root, name, timeout_s=timeout_s))
        yield


def has_locks(root: str) -> bool:
    """Whether writers in several processes can lock ``root`` (local disks, NFS, S3 with conditional writes), so
    shard children may commit to its manifest concurrently."""
    from storage import supports_locking

    return supports_locking(root)


def is_complete(root: str, job: ShardJob) -> bool:
    from storage import load_manifest

    return load_manifest(root).is_complete(root, job.path, job.config_hash)


def gather(groups: Sequence[ShardGroup], futures: Sequence[Any]) -> list[dict[str, Any]]:
    """Every group task's records once all have ended; fails listing the groups that failed."""
    from prefect.futures import wait

    wait(futures)
    results, failed = [], []
    for group, future in zip(groups, futures, strict=True):
        if future.state.is_completed():
            results += future.result()
        else:
            failed.append(f"{group.label}: {future.state.message or future.state.name}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(groups)} shard groups failed:\n" + "\n".join(failed))
    return results
