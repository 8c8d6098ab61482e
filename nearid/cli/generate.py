"""Generation commands: ``generators`` (list every configuration), ``generate`` (write distractor shards) and
``convert-weights`` (the one-time conversion of published pickles to safetensors)."""

from __future__ import annotations

import argparse
import json

from nearid.cli.args import add_progress, key_value, positive_int


DTYPE_CHOICES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")  # generators.base.DTYPES


def hub_pin(text: str) -> tuple[str, str]:
    """``org/name=commit``: the commit is kept as text (a commit of digits only is still a commit)."""
    hub_id, _, commit = text.partition("=")
    if not hub_id or not commit:
        raise argparse.ArgumentTypeError(f"expected HUB_ID=COMMIT, got {text!r}")
    return hub_id, commit


def cmd_convert_weights(args: argparse.Namespace) -> int:
    from nearid.common.convert import convert_pickles

    done = convert_pickles(args.folder, dry_run=args.dry_run)
    for item in done:
        verb = "exists" if item.skipped else ("would write" if args.dry_run else f"wrote ({item.tensors} tensors)")
        print(f"{item.source} -> {item.target.name}: {verb}")
    if not done:
        print(f"no pickled weights under {args.folder}")
    return 0


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
        revisions=dict(args.revision),
    )
    for s in summaries:
        print(
            f"{s.config:16s} shards written {s.shards_written}, skipped {s.shards_skipped}; "
            f"images {s.images_written} written, {s.images_rejected} rejected; {s.seconds:.1f}s "
            f"(models loaded {s.model_loads}x, {s.load_seconds:.1f}s)"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the generation commands to the ``nearid`` parser."""
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
    p.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPE_CHOICES,
        help="auto: bf16 on CUDA, float32 on CPU (FLUX and Qwen refuse fp16); recorded in each shard's manifest entry",
    )
    p.add_argument("--model-dir", default=None, help="folder with one sub-folder per model (e.g. tiny models)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="images per pipeline call")
    p.add_argument(
        "--set",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a configuration field, e.g. --set steps=2 --set resolution=64 (recorded in the hash)",
    )
    p.add_argument(
        "--revision",
        type=hub_pin,
        action="append",
        default=[],
        metavar="HUB_ID=COMMIT",
        help="load this hub model at this commit (repeatable; in the hash and the provenance)",
    )
    add_progress(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "convert-weights",
        help="convert published pickle weights (.bin, .pt) under a folder to safetensors, once",
        description="Reads each pickled state dict with torch.load(weights_only=True), tensors only, and writes the "
        "safetensors file the loaders expect beside it (pytorch_model.bin -> model.safetensors). The only command "
        "that reads a pickle; generation never does.",
    )
    p.add_argument("folder", help="a downloaded checkpoint, e.g. the PowerPaint_v2 snapshot in the hub cache")
    p.add_argument("--dry-run", action="store_true", help="only list what would be converted")
    p.set_defaults(func=cmd_convert_weights)
