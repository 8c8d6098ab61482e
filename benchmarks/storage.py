"""Storage throughput at 512x512: Parquet shard write and read, against the same PNGs as loose files.

Prints images/s for each path and, measured in the same run, the ratios that matter on a noisy
machine: Parquet read vs loose-file read, and PNG compression level 1 vs 6 (time and size).
Run: python benchmarks/storage.py [--identities 48] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path


# run as a script, this file's folder comes first on sys.path and its name would shadow the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from nearid.common.logs import setup_logging  # noqa: E402
from nearid.common.procedural import ProceduralConfig, plan_identities, render_identity  # noqa: E402
from storage import ShardWriter, TableReader, commit_shards, shard_path  # noqa: E402
from storage.codecs import decode_mask, decode_rgb, encode_mask, encode_png  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def best_of(trials: int, *fns):
    """Run the functions interleaved ``trials`` times; the minimum time of each (noise only adds time)."""
    best = [float("inf")] * len(fns)
    for _ in range(trials):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], timed(fn)[1])
    return best


def main() -> None:
    setup_logging(-1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=48)
    parser.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    scratch = Path(args.out or tempfile.mkdtemp(prefix="nearid-bench-"))
    config = ProceduralConfig(identities=args.identities, image_size=512, seed=1)
    rows = [render_identity(p, config) | {"split": "train"} for p in plan_identities(config)]
    views = [(r[f"images{k}"], r[f"masks{k}"]) for r in rows for k in range(1, r["n_images"] + 1)]
    n_images = len(views)
    print(f"{args.identities} identities, {n_images} views at 512x512 (each view = 1 image + 1 mask)")

    # 1. encode cost of the codec choice, same images, same run
    level1, t1 = timed(lambda: [encode_png(img, compress_level=1) for img, _ in views])
    level6, t6 = timed(lambda: [encode_png(img, compress_level=6) for img, _ in views])
    size1, size6 = sum(map(len, level1)), sum(map(len, level6))

    # 2. Parquet shards: encode + write through the real writer (images and masks)
    root = str(scratch / "parquet")

    def write() -> None:
        entries = []
        for k, start in enumerate(range(0, len(rows), 16)):
            with ShardWriter(root, "identities", shard_path("identities", k), "bench") as writer:
                for row in rows[start : start + 16]:
                    writer.write(row)
            entries.append(writer.entry)
        commit_shards(root, entries)

    _, t_write = timed(write)

    # 3. Parquet read: stream and decode every image and mask (or only stream the bytes)
    def read_parquet(decode: bool = True) -> int:
        count = 0
        for row in TableReader(root, "identities").iter_rows(decode=decode):
            count += sum(row[f"images{k}"] is not None for k in range(1, 4))
        return count

    assert read_parquet() == n_images

    # 4. the same PNG bytes as loose files, read and decoded the same way
    loose = scratch / "loose"
    loose.mkdir(parents=True, exist_ok=True)
    masks = [encode_mask(mask) for _, mask in views]
    for i, (image_bytes, mask_bytes) in enumerate(zip(level1, masks, strict=True)):
        (loose / f"{i:06d}.png").write_bytes(image_bytes)
        (loose / f"{i:06d}_mask.png").write_bytes(mask_bytes)

    def read_loose(decode: bool = True) -> None:
        for i in range(n_images):
            image, mask = (loose / f"{i:06d}.png").read_bytes(), (loose / f"{i:06d}_mask.png").read_bytes()
            if decode:
                decode_rgb(image)
                decode_mask(mask)

    t_read, t_loose, t_read_io, t_loose_io = best_of(
        3, read_parquet, read_loose, lambda: read_parquet(False), lambda: read_loose(False)
    )

    print(f"{'path':38s} {'images/s':>10s}")
    print(f"{'PNG encode, level 1':38s} {n_images / t1:10.1f}")
    print(f"{'PNG encode, level 6':38s} {n_images / t6:10.1f}")
    print(f"{'Parquet write (encode+write, +masks)':38s} {n_images / t_write:10.1f}")
    print(f"{'Parquet read (stream+decode, +masks)':38s} {n_images / t_read:10.1f}")
    print(f"{'loose PNG read (open+decode, +masks)':38s} {n_images / t_loose:10.1f}")
    print(f"{'Parquet read, bytes only':38s} {n_images / t_read_io:10.1f}")
    print(f"{'loose PNG read, bytes only':38s} {n_images / t_loose_io:10.1f}")
    print("ratios (same run, best of 3 interleaved):")
    print(f"  Parquet read / loose-file read throughput, decoded:    {t_loose / t_read:.2f}")
    print(f"  Parquet read / loose-file read throughput, bytes only: {t_loose_io / t_read_io:.2f}")
    print(f"  PNG level 1 / level 6 encode time:         {t1 / t6:.2f}")
    print(f"  PNG level 1 / level 6 bytes:               {size1 / size6:.2f}")
    print(f"  mean stored bytes per 512x512 view (level 1): {size1 / n_images / 1024:.0f} KiB")
    if args.out is None:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
