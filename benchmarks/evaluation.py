"""Evaluation: images embedded per second, and embedding calls per benchmark against the naive per-source count.

Builds a procedural dataset with the nine distractor sources of the paper (the procedural distractors written
once per source with a source tag in each PNG, so every source has its own bytes, as real sources do), an MTG
dataset and a DreamBench++ layout; evaluates one tiny scorer twice in the same run folder, both conditions, and
prints per benchmark the naive per-source count (what evaluating each source on its own embeds), the unique
inputs, the embedding calls of the first run and of the second run, and images embedded per second.
Run: python benchmarks/evaluation.py [--identities 60] [--test 30] [--image-size 128] [--scorer siglip2-map]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path


# run as a script, this file's folder comes first on sys.path and could shadow the packages
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from PIL import Image  # noqa: E402
from PIL.PngImagePlugin import PngInfo  # noqa: E402

from generators.run import generate_distractors  # noqa: E402
from nearid.common.logs import setup_logging  # noqa: E402
from nearid.common.procedural import ProceduralConfig  # noqa: E402
from nearid.curation.procedural import curate_procedural  # noqa: E402
from nearid.evaluation.evaluate import EvaluationConfig, evaluate  # noqa: E402
from nearid.evaluation.metrics import SOURCES  # noqa: E402
from nearid.evaluation.scorers import ScorerSettings, build_scorer  # noqa: E402
from nearid.offline.dreambench_layout import write_synthetic_dreambench  # noqa: E402
from nearid.offline.mtg_layout import write_procedural_mtg  # noqa: E402
from nearid.offline.tiny_models import build_tiny_models  # noqa: E402
from storage import ShardWriter, TableReader, commit_shards, load_manifest  # noqa: E402


def tagged(png: bytes, source: str) -> bytes:
    """The same pixels with a text chunk naming the source: distinct bytes, identical image."""
    info = PngInfo()
    info.add_text("source", source)
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def write_sources(root: str, sources: list[str]) -> None:
    """One distractors table per source, from the procedural one, each with its own image bytes."""
    reader = TableReader(root, "distractors/procedural")
    entries = []
    for entry in load_manifest(root).table("distractors/procedural"):
        rows = list(reader.iter_rows(decode=False, shards=[entry]))
        for source in sources:
            table = f"distractors/{source}"
            with ShardWriter(root, table, entry.path.replace("distractors/procedural/", f"{table}/"), "bench") as out:
                for row in rows:
                    cells = {f"nimg{k}": row[f"nimg{k}"] for k in (1, 2, 3)}
                    for column, cell in cells.items():
                        if cell is not None:
                            cells[column] = {"bytes": tagged(cell["bytes"], source), "path": None}
                    out.write({**row, **cells, "config": source})
                entries.append(out.close())
    commit_shards(root, entries)


def main() -> None:
    setup_logging(-1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=60)
    parser.add_argument("--test", type=int, default=30, help="test identities (the evaluated split)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--mtg-samples", type=int, default=20)
    parser.add_argument("--scorer", default="siglip2-map")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nearid-evaluation-bench-"))
    root = str(work / "data")
    config = ProceduralConfig(identities=args.identities, image_size=args.image_size)
    curate_procedural(root, config, shard_size=32, n_val=1, n_test=args.test, progress=False)
    generate_distractors(root, ["procedural"], overrides={"resolution": args.image_size}, progress=False)
    write_sources(root, list(SOURCES))
    write_procedural_mtg(work / "mtg", ProceduralConfig(identities=args.mtg_samples, image_size=args.image_size))
    dreambench = write_synthetic_dreambench(work / "dreambench", subjects=2, prompts=9, size=args.image_size)
    models = work / "tiny"
    build_tiny_models(models)

    evaluation = EvaluationConfig(
        data=root,
        sources=SOURCES,
        mtg=str(work / "mtg"),
        dreambench_samples=str(dreambench.samples),
        dreambench_ratings=str(dreambench.ratings),
        batch_size=args.batch_size,
        progress=False,
    )
    settings = ScorerSettings(model_dir=str(models), batch_size=args.batch_size)
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        results = evaluate(evaluation, [build_scorer(args.scorer, settings)], work / "run")
        runs.append((results["scorers"][0]["work"], time.perf_counter() - start))
    (first, first_seconds), (second, second_seconds) = runs

    print(
        f"scorer {args.scorer} (tiny), {args.test} test identities at {args.image_size}px, 9 sources, both conditions"
    )
    print(
        f"\n{'benchmark':11s} {'naive':>7s} {'unique':>7s} {'run 1 calls':>12s} {'run 2 calls':>12s} {'images/s':>9s}"
    )
    for name, stats in first.items():
        print(
            f"{name:11s} {stats['naive']:7d} {stats['unique']:7d} {stats['computed']:12d} "
            f"{second[name]['computed']:12d} {stats['per_second']:9.1f}"
        )
    naive = sum(s["naive"] for s in first.values())
    computed = sum(s["computed"] for s in first.values())
    seconds = sum(s["seconds"] for s in first.values())
    print(
        f"{'total':11s} {naive:7d} {sum(s['unique'] for s in first.values()):7d} {computed:12d} "
        f"{sum(s['computed'] for s in second.values()):12d} {computed / seconds:9.1f}"
    )
    print(f"\nembedding calls, first run / naive per-source count: {computed / naive:.1%}")
    print(f"evaluate wall time: first run {first_seconds:.1f}s, second run (all cached) {second_seconds:.1f}s")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
