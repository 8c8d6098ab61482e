"""Offline commands: ``tiny-models`` (random-weight stand-ins) and ``demo`` (the whole chain on the embedded
default). ``demo`` is the one command that dispatches to a Prefect flow: the CLI is the top floor."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from nearid.cli.args import positive_int


def cmd_tiny_models(args: argparse.Namespace) -> int:
    from nearid.offline.tiny_models import build_tiny_models

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


def register(sub: argparse._SubParsersAction) -> None:
    """Add the offline commands to the ``nearid`` parser."""
    p = sub.add_parser("tiny-models", help="build tiny random-weight models for offline tests and the demo")
    p.add_argument("--out", required=True, help="folder to write the models into")
    p.add_argument("--seed", type=int, default=0, help="seed of every model's weights")
    p.add_argument("--force", action="store_true", help="rebuild even if an identical build exists")
    p.set_defaults(func=cmd_tiny_models)

    p = sub.add_parser("demo", help="run the whole pipeline on the embedded default (CPU, tiny models)")
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--identities", type=positive_int, default=2400, help="procedural identities")
    p.add_argument("--image-size", type=positive_int, default=64, help="view size in pixels")
    p.add_argument("--test-identities", type=positive_int, default=60, help="held-out identities benchmarked")
    p.add_argument("--val-identities", type=positive_int, default=30, help="identities for validation")
    p.add_argument("--epochs", type=positive_int, default=12, help="training epochs of the tiny head")
    p.add_argument("--seed", type=int, default=0, help="procedural generator seed")
    p.set_defaults(func=cmd_demo)
