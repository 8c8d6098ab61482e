"""The ``nearid`` command line. Sub-commands import their heavy dependencies only when they run,
so ``nearid --help`` answers without loading torch."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

from nearid import __version__


logger = logging.getLogger("nearid")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _print_summary(title: str, summary: object) -> None:
    from dataclasses import asdict

    print(f"{title}: {json.dumps(asdict(summary), indent=2)}")


# -- commands -------------------------------------------------------------------------------------


def cmd_curate(args: argparse.Namespace) -> int:
    from nearid.curate import curate_procedural
    from nearid.sources.procedural import ProceduralConfig

    config = ProceduralConfig(identities=args.identities, image_size=args.image_size, seed=args.seed)
    summary = curate_procedural(
        args.out,
        config,
        shard_size=args.shard_size,
        n_val=args.val,
        n_test=args.test,
        workers=args.workers,
        force=args.force,
        progress=not args.no_progress,
    )
    _print_summary("curated", summary)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from storage.manifest import load_manifest
    from storage.validate import validate

    problems = validate(
        args.root, decode=not args.no_decode, verify_checksums=not args.no_checksum, progress=not args.no_progress
    )
    for problem in problems:
        print(problem)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    if errors:
        print(f"INVALID: {args.root}: {errors} error(s), {warnings} warning(s)")
        return 1
    counts = load_manifest(args.root).counts()
    tables = ", ".join(f"{t} {c['rows']} rows/{c['shards']} shards" for t, c in counts.items())
    print(f"OK: {args.root}: {tables}; {warnings} warning(s)")
    return 0


def cmd_tiny_models(args: argparse.Namespace) -> int:
    from nearid.tiny_models import build_tiny_models

    index = build_tiny_models(args.out, seed=args.seed, force=args.force)
    for name, entry in index["models"].items():
        print(f"{name:26s} {os.path.join(args.out, entry['path'])}  (stands in for {entry['stands_in_for']})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from nearid.curate import curate_procedural
    from nearid.sources.procedural import ProceduralConfig
    from nearid.tiny_models import build_tiny_models
    from storage.validate import validate

    start = time.perf_counter()
    data_root = os.path.join(args.out, "data")
    models_dir = os.path.join(args.out, "tiny-models")
    print(f"[1/3] tiny offline models -> {models_dir}")
    build_tiny_models(models_dir)
    print(f"[2/3] procedural identities ({args.identities} at {args.image_size}px) -> {data_root}")
    config = ProceduralConfig(identities=args.identities, image_size=args.image_size, seed=args.seed)
    summary = curate_procedural(data_root, config, shard_size=args.shard_size, progress=not args.no_progress)
    print(f"      {summary.identities} identities, views {summary.views}, splits {summary.splits}")
    print(f"[3/3] validate {data_root}")
    problems = validate(data_root, progress=not args.no_progress)
    errors = [p for p in problems if p.severity == "error"]
    for problem in problems:
        print(f"      {problem}")
    print(f"demo finished in {time.perf_counter() - start:.1f}s")
    print(f"  dataset:     {data_root}  (manifest: {os.path.join(data_root, 'manifest.json')})")
    print(f"  tiny models: {models_dir}")
    print(f"  validation:  {'FAILED, ' + str(len(errors)) + ' error(s)' if errors else 'OK'}")
    return 1 if errors else 0


# -- parser ---------------------------------------------------------------------------------------


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nearid",
        description="Near-identity distractors, NearID training and identity-aware embedding benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"nearid {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v: debug)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("curate", help="write an identities dataset (shards + manifest) from a source")
    p.add_argument("--source", choices=["procedural"], required=True, help="where identities come from")
    p.add_argument("--out", required=True, help="dataset root: a local folder or an fsspec URL")
    p.add_argument("--identities", type=_positive_int, default=1000, help="procedural: number of identities")
    p.add_argument("--image-size", type=_positive_int, default=512, help="procedural: view size in pixels")
    p.add_argument("--seed", type=int, default=0, help="procedural: generator seed")
    p.add_argument("--shard-size", type=_positive_int, default=256, help="identities per shard")
    p.add_argument("--val", type=int, default=None, help="validation identities (default: 5%%, at most 100)")
    p.add_argument("--test", type=int, default=None, help="test identities (default: 15%%, at most 500)")
    p.add_argument("--workers", type=_positive_int, default=1, help="processes writing shards in parallel")
    p.add_argument("--force", action="store_true", help="rewrite shards even when complete")
    _add_progress(p)
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("validate", help="check a dataset root against its manifest; non-zero exit on any error")
    p.add_argument("root", help="dataset root: a local folder or an fsspec URL")
    p.add_argument("--no-decode", action="store_true", help="skip decoding every image and mask")
    p.add_argument("--no-checksum", action="store_true", help="skip SHA-256 verification of shards")
    _add_progress(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("tiny-models", help="build tiny random-weight models for offline tests and the demo")
    p.add_argument("--out", required=True, help="folder to write the models into")
    p.add_argument("--seed", type=int, default=0, help="seed of every model's weights")
    p.add_argument("--force", action="store_true", help="rebuild even if an identical build exists")
    p.set_defaults(func=cmd_tiny_models)

    p = sub.add_parser("demo", help="run the whole pipeline on the embedded default (CPU, tiny models)")
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--identities", type=_positive_int, default=600, help="procedural identities")
    p.add_argument("--image-size", type=_positive_int, default=128, help="view size in pixels")
    p.add_argument("--seed", type=int, default=0, help="procedural generator seed")
    p.add_argument("--shard-size", type=_positive_int, default=128, help="identities per shard")
    _add_progress(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nearid`` console script."""
    from nearid.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose - args.quiet)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        logger.debug("command failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
