"""Small benchmark inputs shared by the evaluation and report tests: a procedural dataset whose procedural
distractors are registered under several source names, an MTG dataset and a DreamBench++ layout."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from generators.run import generate_distractors
from nearid.common.procedural import ProceduralConfig
from nearid.curation.procedural import curate_procedural
from nearid.offline.dreambench_layout import write_synthetic_dreambench
from nearid.offline.mtg_layout import write_procedural_mtg
from storage import ShardEntry, commit_shards, load_manifest


@dataclass(frozen=True)
class BenchInputs:
    data: str
    sources: tuple[str, ...]
    mtg: str
    dreambench_samples: str
    dreambench_ratings: str


def register_copies(root: str, names: Sequence[str], table: str = "distractors/procedural") -> None:
    """Register the shards of ``table`` again under ``distractors/<name>`` (same bytes, same rows)."""
    entries = []
    for entry in load_manifest(root).table(table):
        for name in names:
            target = f"distractors/{name}"
            path = entry.path.replace(table + "/", target + "/", 1)
            (Path(root) / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(root) / entry.path, Path(root) / path)
            entries.append(
                ShardEntry(path, target, entry.rows, entry.bytes, entry.sha256, entry.config_hash, stats=entry.stats)
            )
    commit_shards(root, entries)


def build_inputs(
    out: Path, sources: Sequence[str], identities: int = 10, test: int = 6, mtg_samples: int = 6
) -> BenchInputs:
    """Curate, generate procedural distractors at 64 px, register them as ``sources``, write MTG and DB++."""
    data = str(out / "data")
    config = ProceduralConfig(identities=identities, image_size=64, seed=1)
    curate_procedural(data, config, shard_size=4, n_val=1, n_test=test, progress=False)
    generate_distractors(data, ["procedural"], overrides={"resolution": 64}, progress=False)
    register_copies(data, sources)
    write_procedural_mtg(out / "mtg", ProceduralConfig(identities=mtg_samples, image_size=64, seed=5))
    dreambench = write_synthetic_dreambench(out / "dreambench", subjects=1, prompts=3)
    return BenchInputs(data, tuple(sources), str(out / "mtg"), str(dreambench.samples), str(dreambench.ratings))


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (tiny models are dominated by threading overhead), then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
