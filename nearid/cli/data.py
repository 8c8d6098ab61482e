"""Dataset commands: ``curate``, ``validate``, ``import-hf`` and ``export-hf``."""

from __future__ import annotations

import argparse
import os

from nearid.cli.args import add_progress, positive_int, print_summary


def cmd_curate(args: argparse.Namespace) -> int:
    if args.source == "syncd":
        from nearid.curation.syncd import SyncdCurationConfig, curate_syncd

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
        print_summary("curated", summary)
        print(f"report: {os.path.join(args.out, 'reports', 'curation.md')}")
        return 0

    from nearid.common.procedural import ProceduralConfig
    from nearid.curation.procedural import curate_procedural

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
    print_summary("curated", summary)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from storage.manifest import load_manifest
    from storage.validate import validate

    problems = validate(
        args.root,
        decode=not args.no_decode,
        verify_checksums=not args.no_checksum,
        progress=not args.no_progress,
        allow_partial=args.allow_partial,
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
    from storage.official_import import import_official

    distractors = dict(_distractor_arg(d) for d in args.distractors)
    summary = import_official(args.positives, args.out, distractors, split_dir=args.splits, shard_size=args.shard_size)
    print_summary("imported", summary)
    return 0


def cmd_export_hf(args: argparse.Namespace) -> int:
    from storage.official import export_official

    written = export_official(args.root, args.out)
    for name, rows in written.items():
        print(f"{name:24s} {rows} rows -> {os.path.join(args.out, name)}")
    print(f"splits -> {os.path.join(args.out, 'splits')}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from nearid.visual import write_contact_sheet
    from storage import TableReader

    identity = args.id if args.id is not None else int(TableReader(args.root, "identities").ids()[0])
    out = args.out or f"nearid-{identity}.png"
    write_contact_sheet(args.root, identity, out, configs=args.config, tile=args.tile)
    print(f"contact sheet of identity {identity}: {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the dataset commands to the ``nearid`` parser."""
    p = sub.add_parser("curate", help="write an identities dataset (shards + manifest) from a source")
    p.add_argument("--source", choices=["procedural", "syncd"], required=True, help="where identities come from")
    p.add_argument("--input", help="syncd: the SynCD release folder (with *metadata.json)")
    p.add_argument("--out", required=True, help="dataset root: a local folder or an fsspec URL")
    p.add_argument("--min-aesthetics", type=float, default=None, help="syncd: drop views scoring below this")
    p.add_argument("--min-dino", type=float, default=None, help="syncd: keep views in a pair with DINO >= this")
    p.add_argument("--identities", type=positive_int, default=1000, help="procedural: number of identities")
    p.add_argument("--image-size", type=positive_int, default=512, help="procedural: view size in pixels")
    p.add_argument("--seed", type=int, default=0, help="procedural: generator seed")
    p.add_argument("--shard-size", type=positive_int, default=256, help="identities per shard")
    p.add_argument("--val", type=int, default=None, help="validation identities (default: 5%%, at most 100)")
    p.add_argument("--test", type=int, default=None, help="test identities (default: 15%%, at most 500)")
    p.add_argument("--workers", type=positive_int, default=1, help="processes writing shards in parallel")
    p.add_argument("--force", action="store_true", help="rewrite shards even when complete")
    add_progress(p)
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("validate", help="check a dataset root against its manifest; non-zero exit on any error")
    p.add_argument("root", help="dataset root: a local folder or an fsspec URL")
    p.add_argument("--no-decode", action="store_true", help="skip decoding every image and mask")
    p.add_argument("--no-checksum", action="store_true", help="skip SHA-256 verification of shards")
    p.add_argument(
        "--allow-partial", action="store_true", help="report unfinished tables as warnings, not errors (exit 0)"
    )
    add_progress(p)
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
    p.add_argument("--shard-size", type=positive_int, default=256, help="identities per shard")
    p.set_defaults(func=cmd_import_hf)

    p = sub.add_parser("export-hf", help="export a dataset root to the official NearID layout")
    p.add_argument("root", help="dataset root to read")
    p.add_argument("--out", required=True, help="folder for NearID/, NearID-<source>/ and splits/")
    p.set_defaults(func=cmd_export_hf)

    p = sub.add_parser("show", help="a contact sheet of one identity: views, masks and every distractor")
    p.add_argument("root", help="dataset root")
    p.add_argument("--id", type=int, default=None, help="identity id (default: the first in the table)")
    p.add_argument("--out", default=None, help="PNG to write (default: nearid-ID.png here)")
    p.add_argument("--config", action="append", default=None, help="only this configuration (repeatable)")
    p.add_argument("--tile", type=positive_int, default=160, help="tile size in pixels")
    p.set_defaults(func=cmd_show)
