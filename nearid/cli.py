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
from pathlib import Path

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
    if args.source == "syncd":
        from nearid.curate_syncd import SyncdCurationConfig, curate_syncd

        if not args.input:
            raise ValueError("--source syncd needs --input DIR (a SynCD release folder)")
        config = SyncdCurationConfig(
            min_aesthetics=args.min_aesthetics,
            min_dino=args.min_dino,
            n_val=args.val,
            n_test=args.test,
            shard_size=args.shard_size,
        )
        summary = curate_syncd(
            args.input, args.out, config, workers=args.workers, force=args.force, progress=not args.no_progress
        )
        _print_summary("curated", summary)
        print(f"report: {os.path.join(args.out, 'reports', 'curation.md')}")
        return 0

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


def _distractor_arg(text: str) -> tuple[str, str]:
    """``NAME=DIR`` or a folder named like the official datasets (``NearID-Flux_1024``)."""
    from storage.official import config_name_for

    if "=" in text:
        name, folder = text.split("=", 1)
        return name, folder
    return config_name_for(text.rstrip("/")), text


def cmd_import_hf(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from storage.official import import_official

    distractors = dict(_distractor_arg(d) for d in args.distractors)
    summary = import_official(args.positives, args.out, distractors, split_dir=args.splits, shard_size=args.shard_size)
    print(f"imported: {json.dumps(asdict(summary), indent=2)}")
    return 0


def cmd_export_hf(args: argparse.Namespace) -> int:
    from storage.official import export_official

    written = export_official(args.root, args.out)
    for name, rows in written.items():
        print(f"{name:24s} {rows} rows -> {os.path.join(args.out, name)}")
    print(f"splits -> {os.path.join(args.out, 'splits')}")
    return 0


def _override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE parsed as JSON when it can be (numbers, booleans), else kept as text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def cmd_generators(args: argparse.Namespace) -> int:
    from generators.registry import CONFIGS

    if args.json:
        print(json.dumps({name: config.to_dict() for name, config in CONFIGS.items()}, indent=2))
        return 0
    for name, config in CONFIGS.items():
        print(f"{name:16s} {config.family:13s} {config.params_hash()}  {config.description}")
        models = ", ".join(f"{m.role}={m.hub_id}" for m in config.models) or "no weights"
        print(
            f"{'':16s} res {config.resolution} ({config.resize_mode}), steps {config.steps}, "
            f"guidance {config.guidance}, strength {config.strength}; {models}"
        )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from generators.run import generate_distractors

    overrides = dict(args.set)
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    summaries = generate_distractors(
        args.data,
        args.config,
        shards=args.shards,
        force=args.force,
        device=args.device,
        dtype=args.dtype,
        model_dir=args.model_dir,
        overrides=overrides,
        progress=not args.no_progress,
        splits=args.splits.split(",") if args.splits else None,
    )
    for s in summaries:
        print(
            f"{s.config:16s} shards written {s.shards_written}, skipped {s.shards_skipped}; "
            f"images {s.images_written} written, {s.images_rejected} rejected; {s.seconds:.1f}s"
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from nearid.launch import launch_training

    return launch_training(args.config, num_processes=args.num_processes, resume=args.resume, cpu=args.cpu or None)


def cmd_export_model(args: argparse.Namespace) -> int:
    from nearid.export import export_model

    folder = export_model(args.run, args.out, best=args.best)
    print(f"release written to {folder}")
    return 0


def cmd_tiny_models(args: argparse.Namespace) -> int:
    from nearid.tiny_models import build_tiny_models

    index = build_tiny_models(args.out, seed=args.seed, force=args.force)
    for name, entry in index["models"].items():
        print(f"{name:26s} {os.path.join(args.out, entry['path'])}  (stands in for {entry['stands_in_for']})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.settings import use_embedded_default

    use_embedded_default(args.out)  # a private Prefect home inside the run folder; must precede importing prefect
    from flows.demo import demo_flow

    start = time.perf_counter()
    summary = demo_flow(
        out=args.out,
        identities=args.identities,
        image_size=args.image_size,
        test_identities=args.test_identities,
        val_identities=args.val_identities,
        epochs=args.epochs,
        seed=args.seed,
    )
    results = json.loads((Path(summary["report"]).parent / "results.json").read_text())
    print(f"\ndemo finished in {time.perf_counter() - start:.0f}s")
    print("stage timings (s): " + ", ".join(f"{k} {v}" for k, v in summary["timings"].items()))
    entries = {e["label"]: e for e in results["scorers"]}
    labels = list(entries)
    print(f"\nSSR on test identities (full image), {' vs '.join(labels)}:")
    for source in entries[labels[0]]["nearid"]["full"]["sources"]:
        values = [entries[label]["nearid"]["full"]["sources"][source]["ssr"] for label in labels]
        cells = ["   n/a" if value is None else f"{value:6.1f}" for value in values]  # n/a: no sample
        print(f"  {source:16s} " + "  ".join(cells))
    print(f"\nreport: {Path(summary['report']) / 'report.html'}")
    print(f"        {Path(summary['report']) / 'report.md'}")
    print(f"data:   {Path(args.out) / 'data'}   model: {summary['result']['model']}")
    return 0


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
    p.add_argument("--source", choices=["procedural", "syncd"], required=True, help="where identities come from")
    p.add_argument("--input", help="syncd: the SynCD release folder (with *metadata.json)")
    p.add_argument("--out", required=True, help="dataset root: a local folder or an fsspec URL")
    p.add_argument("--min-aesthetics", type=float, default=None, help="syncd: drop views scoring below this")
    p.add_argument("--min-dino", type=float, default=None, help="syncd: keep views in a pair with DINO >= this")
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

    p = sub.add_parser("import-hf", help="import the official NearID layout (positives + distractor datasets)")
    p.add_argument("positives", help="official positives dataset: a save_to_disk folder or a folder of Parquet files")
    p.add_argument("--out", required=True, help="dataset root to write")
    p.add_argument(
        "--distractors",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help="a row-aligned distractor dataset; NAME defaults from folder names like NearID-Flux_1024 (repeatable)",
    )
    p.add_argument("--splits", help="folder with train/val/test.json row positions (default: the split column)")
    p.add_argument("--shard-size", type=_positive_int, default=256, help="identities per shard")
    p.set_defaults(func=cmd_import_hf)

    p = sub.add_parser("export-hf", help="export a dataset root to the official NearID layout")
    p.add_argument("root", help="dataset root to read")
    p.add_argument("--out", required=True, help="folder for NearID/, NearID-<source>/ and splits/")
    p.set_defaults(func=cmd_export_hf)

    p = sub.add_parser("generators", help="list every generator configuration with all its parameters")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_generators)

    p = sub.add_parser("generate", help="write distractors/<config> shards for one or more configurations")
    p.add_argument("--data", required=True, help="dataset root with identities")
    p.add_argument("--config", action="append", required=True, help="configuration name (repeatable)")
    p.add_argument("--shards", default=None, help="identity shards to process, e.g. 0-3,7 (default: all)")
    p.add_argument("--splits", default=None, help="only identities of these splits, e.g. test or val,test")
    p.add_argument("--force", action="store_true", help="regenerate shards even when complete")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0 (default: cpu)")
    p.add_argument("--dtype", default="float32", help="float32, bf16 or fp16 (FLUX and Qwen refuse fp16)")
    p.add_argument("--model-dir", default=None, help="folder with one sub-folder per model (e.g. tiny models)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="images per pipeline call")
    p.add_argument(
        "--set",
        type=_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a configuration field, e.g. --set steps=2 --set resolution=64 (recorded in the hash)",
    )
    _add_progress(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="train the NearID head (runs accelerate launch -m nearid.train for you)")
    p.add_argument("--config", required=True, help="training YAML (see docs/training.md)")
    p.add_argument("--num-processes", type=_positive_int, default=1, help="processes (GPUs, or CPU workers)")
    p.add_argument("--resume", default=None, help="a checkpoint folder, or 'latest'")
    p.add_argument("--cpu", action="store_true", help="train on CPU even when a GPU is present")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export-model", help="write a training run as the official NearID release layout")
    p.add_argument("run", help="training run folder (run.out of the config)")
    p.add_argument("--out", required=True, help="release folder to write")
    p.add_argument("--best", action="store_true", help="export the best head on validation instead of the final one")
    p.set_defaults(func=cmd_export_model)

    p = sub.add_parser("tiny-models", help="build tiny random-weight models for offline tests and the demo")
    p.add_argument("--out", required=True, help="folder to write the models into")
    p.add_argument("--seed", type=int, default=0, help="seed of every model's weights")
    p.add_argument("--force", action="store_true", help="rebuild even if an identical build exists")
    p.set_defaults(func=cmd_tiny_models)

    p = sub.add_parser("demo", help="run the whole pipeline on the embedded default (CPU, tiny models)")
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--identities", type=_positive_int, default=2400, help="procedural identities")
    p.add_argument("--image-size", type=_positive_int, default=64, help="view size in pixels")
    p.add_argument("--test-identities", type=_positive_int, default=60, help="held-out identities benchmarked")
    p.add_argument("--val-identities", type=_positive_int, default=30, help="identities for validation")
    p.add_argument("--epochs", type=_positive_int, default=12, help="training epochs of the tiny head")
    p.add_argument("--seed", type=int, default=0, help="procedural generator seed")
    p.set_defaults(func=cmd_demo)

    from nearid.evaluation_cli import register as register_evaluation

    register_evaluation(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nearid`` console script."""
    from nearid.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose - args.quiet)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:  # includes MetadataError, OfficialLayoutError
        logger.debug("command failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
