"""Pipeline commands: ``publish`` (a dataset version) and ``accept`` (a trained model) as library calls, and
``rebuild`` / ``regenerate``, which run those Prefect flows on the embedded default (a private Prefect home in
``--run-dir``) unless ``PREFECT_API_URL`` points at a server."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nearid.cli.args import add_progress, key_value, non_negative_int, positive_int
from nearid.cli.generate import DTYPE_CHOICES


def cmd_publish(args: argparse.Namespace) -> int:
    from storage.versions import InvalidDatasetError, publish_version

    try:
        published = publish_version(args.root, decode=not args.no_decode, progress=not args.no_progress)
    except InvalidDatasetError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    state = "published" if published["changed"] else "unchanged, current"
    print(f"{published['version']}  ({state}; record {published['record']})")
    return 0


def cmd_accept(args: argparse.Namespace) -> int:
    from nearid.model.acceptance import accept_model, candidate_record

    decision = accept_model(args.models_dir, candidate_record(args.results, args.label), args.tolerance)
    print(decision.message)
    return 0 if decision.accepted else 1


def _run_flow(run_dir: str, name: str, parameters: dict[str, Any]) -> int:
    """Run flow ``name`` on the embedded default (or the user's server); its summary as JSON, exit 1 on failure."""
    from flows.settings import use_embedded_default

    use_embedded_default(run_dir)  # before prefect is imported
    if name == "rebuild":
        from flows.rebuild import rebuild_dataset as flow
    else:
        from flows.regenerate import regenerate_flow as flow
    state = flow(**parameters, return_state=True)
    try:
        summary = state.result()
    except (ValueError, FileNotFoundError):  # bad input: the one-line error, exit 2
        raise
    except Exception as exc:
        print(f"error: {name} failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _generation(args: argparse.Namespace) -> dict[str, Any]:
    """The generation parameters rebuild and regenerate share."""
    return {
        "force": args.force,
        "model_dir": args.model_dir,
        "device": args.device,
        "dtype": args.dtype,
        "overrides": dict(args.set) or None,
        "shard_timeout_s": args.shard_timeout,
        "retries": args.retries,
        "ray_address": args.ray_address,
        "slot_dir": args.slot_dir,
        "fan_out": args.fan_out,
        "fan_out_width": args.fan_out_width,
        "shards_per_task": args.shards_per_task,
    }


def cmd_rebuild(args: argparse.Namespace) -> int:
    parameters = {
        "root": args.root,
        "configurations": args.config,
        "source": args.source,
        "input_dir": args.input,
        "identities": args.identities,
        "image_size": args.image_size,
        "seed": args.seed,
        "shard_size": args.shard_size,
        "curate_workers": args.workers,
        **_generation(args),
    }
    return _run_flow(args.run_dir, "rebuild", parameters)


def cmd_regenerate(args: argparse.Namespace) -> int:
    parameters = {
        "root": args.root,
        "configurations": args.config,
        "shards": args.shards,
        "splits": args.splits.split(",") if args.splits else None,
        "validate_at_end": not args.no_validate,
        **_generation(args),
    }
    return _run_flow(args.run_dir, "regenerate", parameters)


def _add_generation(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="rewrite complete shards too")
    p.add_argument("--model-dir", default=None, help="folder with one sub-folder per model (e.g. tiny models)")
    p.add_argument("--device", default="auto", help="auto: the slot's GPU, else cpu")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="auto: bf16 on CUDA, float32 on CPU")
    p.add_argument("--set", type=key_value, action="append", default=[], metavar="KEY=VALUE", help="override a field")
    p.add_argument("--shard-timeout", type=float, default=6 * 3600.0, help="seconds one shard's child may run")
    p.add_argument("--retries", type=non_negative_int, default=1, help="retries of a crashed shard")
    p.add_argument(
        "--ray-address", default=None, help="make shards on the actors of this Ray cluster (HOST:PORT, ray://, auto)"
    )
    p.add_argument(
        "--fan-out", default=None, metavar="DEPLOYMENT", help="submit shard groups to this deployment's work pool"
    )
    p.add_argument("--fan-out-width", type=positive_int, default=None, help="groups per configuration with --fan-out")
    p.add_argument("--shards-per-task", type=positive_int, default=None, help="shards per group (one model load)")
    p.add_argument("--slot-dir", default=None, help="folder of the host-wide slot locks")
    p.add_argument("--run-dir", default="runs/pipeline", help="the embedded Prefect home goes to RUN_DIR/.prefect")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the pipeline commands to the ``nearid`` parser."""
    p = sub.add_parser("publish", help="validate a dataset and publish it as a version; prints the version")
    p.add_argument("root", help="dataset root: a local folder or an fsspec URL")
    p.add_argument("--no-decode", action="store_true", help="validate without decoding every image")
    add_progress(p)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("accept", help="accept a trained model unless it regresses; exit 1 when it is rejected")
    p.add_argument("results", help="results.json of `nearid evaluate` with the model (or its folder)")
    p.add_argument("--models-dir", required=True, help="folder holding the accepted model's record")
    p.add_argument("--tolerance", type=float, default=1.0, help="SSR points the new model may lose")
    p.add_argument("--label", default=None, help="the model's scorer label when the results hold several")
    p.set_defaults(func=cmd_accept)

    p = sub.add_parser("rebuild", help="run the rebuild-dataset flow: curate, regenerate, validate, publish")
    p.add_argument("root", help="dataset root")
    p.add_argument("--config", action="append", default=None, help="configuration (repeatable; default: the nine)")
    p.add_argument("--source", default="procedural", choices=("procedural", "syncd"), help="identities source")
    p.add_argument("--input", default=None, help="SynCD release folder (--source syncd)")
    p.add_argument("--identities", type=positive_int, default=1000, help="procedural identities")
    p.add_argument("--image-size", type=positive_int, default=512, help="procedural view size in pixels")
    p.add_argument("--seed", type=int, default=0, help="procedural generator seed")
    p.add_argument("--shard-size", type=positive_int, default=256, help="identities per shard")
    p.add_argument("--workers", type=positive_int, default=1, help="curation worker processes")
    _add_generation(p)
    p.set_defaults(func=cmd_rebuild)

    p = sub.add_parser("regenerate", help="run the regenerate flow: chosen configurations and shards")
    p.add_argument("root", help="dataset root with identities")
    p.add_argument("--config", action="append", required=True, help="configuration name (repeatable)")
    p.add_argument("--shards", default=None, help="identity shards, e.g. 0-3,7 (default: all)")
    p.add_argument("--splits", default=None, help="only identities of these splits, e.g. test or val,test")
    p.add_argument("--no-validate", action="store_true", help="skip validating the dataset at the end")
    _add_generation(p)
    p.set_defaults(func=cmd_regenerate)
