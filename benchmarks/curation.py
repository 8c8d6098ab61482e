"""SynCD curation throughput on a procedural SynCD-layout folder, and where the time goes.

Prints identities/s for a curation run with one worker and with ``--workers`` processes, and the
share of the one-worker run spent decoding images and masks, cleaning masks and encoding PNGs,
each measured separately on the same views in the same run (curation decodes every view once to
check it and every kept view again to write it; it encodes each kept view once).
Run: python benchmarks/curation.py [--identities 2000] [--image-size 512] [--workers 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path


# run as a script, this file's folder comes first on sys.path and could shadow the packages
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from nearid.common.logs import setup_logging  # noqa: E402
from nearid.common.masks import clean_mask  # noqa: E402
from nearid.common.procedural import ProceduralConfig  # noqa: E402
from nearid.curation.syncd import SyncdCurationConfig, curate_syncd  # noqa: E402
from nearid.offline.syncd_layout import write_syncd_folder  # noqa: E402
from storage import TableReader  # noqa: E402
from storage.codecs import encode_mask, encode_png  # noqa: E402
from storage.syncd import read_metadata, view_paths  # noqa: E402


def main() -> None:
    setup_logging(-1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", default=None, help="keep the SynCD folder here and reuse it on later runs")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="nearid-curation-bench-"))
    source = work / f"syncd-{args.identities}-{args.image_size}"
    if not (source / "metadata.json").is_file():
        start = time.perf_counter()
        write_syncd_folder(source, ProceduralConfig(identities=args.identities, image_size=args.image_size))
        print(f"wrote the SynCD folder in {time.perf_counter() - start:.0f}s: {source}")

    timings = {}
    for workers in (1, args.workers):
        out = work / f"out-{workers}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        summary = curate_syncd(str(source), str(out), SyncdCurationConfig(), workers=workers, progress=False)
        timings[workers] = time.perf_counter() - start
    items = read_metadata(source)
    n_in = len(items)

    # the same views, each piece of work timed on its own
    kept_ids = set(TableReader(str(work / "out-1"), "identities").ids().tolist())
    rigid = [i for i in items if i.category == "rigid"]
    decode = clean = encode = 0.0
    kept_views = 0
    for item in rigid:
        for filename in item.filenames:
            image_path, mask_path = view_paths(source, filename)
            t0 = time.perf_counter()
            image = np.asarray(Image.open(image_path).convert("RGB"))
            raw = np.asarray(Image.open(mask_path).convert("L"))
            t1 = time.perf_counter()
            mask = clean_mask(raw)
            t2 = time.perf_counter()
            repeat = 2 if item.id in kept_ids else 1  # checked once, decoded again to write
            decode += (t1 - t0) * repeat
            clean += (t2 - t1) * repeat
            if item.id in kept_ids:
                kept_views += 1
                t3 = time.perf_counter()
                encode_png(image)
                encode_mask(mask)
                encode += time.perf_counter() - t3

    total = timings[1]
    print(f"{n_in} SynCD items ({len(rigid)} rigid) at {args.image_size}px -> {summary.identities} identities")
    print(f"{'workers':>8s} {'seconds':>9s} {'identities/s (in)':>18s}")
    for workers, seconds in timings.items():
        print(f"{workers:8d} {seconds:9.1f} {n_in / seconds:18.1f}")
    print(f"speed-up with {args.workers} workers: {timings[1] / timings[args.workers]:.2f}x")
    measured = decode + clean + encode
    print(f"decode, clean and encode timed separately sum to {measured / total:.2f}x the 1-worker run")
    print("(above 1 means run-to-run noise; the split below is of that measured work)")
    print(f"  decode images + masks (x2 for kept views): {decode / measured:6.1%}")
    print(f"  clean masks (x2 for kept views):           {clean / measured:6.1%}")
    print(f"  encode PNG images + masks ({kept_views} views):   {encode / measured:6.1%}")
    print(f"  everything else (metadata, Parquet, ...):  {max(0.0, total - measured) / total:6.1%} of the run")
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
