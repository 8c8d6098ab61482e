"""Evaluation commands: ``evaluate`` (scorers over the benchmarks) and ``report`` (Markdown and HTML)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from nearid.cli.args import add_progress, non_negative_int, positive_int


SPLIT_CHOICES = ("train", "val", "test", "all")
CONDITION_CHOICES = ("full", "foreground")
DTYPE_CHOICES = ("float32", "fp32", "float16", "fp16", "bfloat16", "bf16")


def _model_override(text: str) -> tuple[str, str]:
    """``SCORER=MODEL``: a hub id or a local folder for one named scorer."""
    name, sep, model = text.partition("=")
    if not sep or not name or not model:
        raise argparse.ArgumentTypeError(f"expected SCORER=MODEL, got {text!r}")
    return name, model


def _fmt(value: Any, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def _print_scorer(entry: dict[str, Any]) -> None:
    print(f"{entry['label']}  ({entry['kind']}, fingerprint {entry['fingerprint'][:12]})")
    for condition, values in (entry.get("nearid") or {}).items():
        groups = values["groups"]
        name = "primary" if "primary" in groups else "evaluated"
        pooled = groups[name]
        print(
            f"  NearID {condition:10s} {name}: SSR {_fmt(pooled['ssr'], '.2f')}  PA {_fmt(pooled['pa'], '.2f')}  "
            f"n {pooled['n_samples']}"
        )
    for condition, values in (entry.get("mtg") or {}).items():
        print(
            f"  MTG    {condition:10s} SSR {_fmt(values['ssr'], '.2f')}  PA {_fmt(values['pa'], '.2f')}  "
            f"M-O {_fmt(values['mo'], '.3f')}  M-O pair {_fmt(values['mo_pair'], '.3f')}"
        )
    mh = (entry.get("dreambench") or {}).get("mh")
    if mh:
        cells = "  ".join(f"{c} {_fmt(v['mh'], '.3f')}" for c, v in mh["categories"].items())
        print(f"  DB++ M-H  {cells}")
    if entry.get("judge"):
        judge = entry["judge"]
        print(
            f"  judge answers {judge['answers']}, unparseable {judge['unparseable']} {json.dumps(judge['problems'])}"
        )
    for benchmark, stats in entry["work"].items():
        print(
            f"  work {benchmark:10s} {stats['unit']}: naive {stats['naive']}, unique {stats['unique']}, "
            f"cache hits {stats['cache_hits']}, shared {stats['shared']}, computed {stats['computed']}"
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate every ``--scorer`` and write RUN/results.json (and the report with ``--report``)."""
    from pathlib import Path

    from nearid.evaluation.cache import EmbeddingCache
    from nearid.evaluation.evaluate import CACHE_NAME, EvaluationConfig, evaluate
    from nearid.evaluation.scorers import ScorerSettings, build_scorer

    config = EvaluationConfig(
        data=args.data,
        sources=tuple(args.source) if args.source else None,
        split=args.split,
        conditions=tuple(args.condition) if args.condition else CONDITION_CHOICES,
        mtg=args.mtg,
        mtg_split=args.mtg_split,
        dreambench_samples=args.dreambench_samples,
        dreambench_ratings=args.dreambench_ratings,
        batch_size=args.batch_size,
        projection_identities=args.projection_identities,
        progress=not args.no_progress,
    )
    settings = ScorerSettings(
        models=tuple(args.model),
        model_dir=args.model_dir,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    scorers = [build_scorer(spec, settings) for spec in args.scorer]
    with EmbeddingCache(args.cache or Path(args.out) / CACHE_NAME) as cache:
        results = evaluate(config, scorers, args.out, cache)
    for entry in results["scorers"]:
        _print_scorer(entry)
    print(f"results: {Path(args.out) / 'results.json'}")
    if args.report:
        from nearid.evaluation.report import write_report

        files = write_report(args.out)
        print(f"report: {files.markdown}  {files.html}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Render RUN/results.json as Markdown and self-contained HTML."""
    from nearid.evaluation.report import write_report

    files = write_report(args.run, args.out)
    print(f"markdown: {files.markdown}")
    print(f"html:     {files.html}")
    for figure in files.figures:
        print(f"figure:   {figure}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the evaluation commands to the ``nearid`` parser."""
    p = subparsers.add_parser(
        "evaluate",
        help="score encoders on NearID (SSR/PA per source and condition), MTG and DreamBench++",
        description="Evaluate scorers; each unique image is embedded once per scorer and condition (cached).",
    )
    p.add_argument("--data", help="dataset root with identities and distractors/<source> tables")
    p.add_argument("--out", required=True, help="run folder for results.json, the score cache and rating files")
    p.add_argument(
        "--scorer",
        action="append",
        required=True,
        metavar="NAME_OR_PATH",
        help="siglip2-map, siglip2-mean, clip, dinov2, vlm-judge, or a release checkpoint folder (repeatable)",
    )
    p.add_argument(
        "--model",
        action="append",
        type=_model_override,
        default=[],
        metavar="SCORER=MODEL",
        help="hub id or folder for one named scorer, e.g. vlm-judge=Qwen/Qwen3-VL-8B-Instruct (repeatable)",
    )
    p.add_argument(
        "--model-dir",
        default=None,
        help="folder with one sub-folder per model (siglip2, clip-vit, dinov2, qwen3-vl), e.g. nearid tiny-models",
    )
    p.add_argument(
        "--source", action="append", default=None, help="distractor source (repeatable; default: all but null)"
    )
    p.add_argument("--split", choices=SPLIT_CHOICES, default="test", help="identities to evaluate (default: test)")
    p.add_argument(
        "--condition", action="append", choices=CONDITION_CHOICES, default=None, help="repeatable (default: both)"
    )
    p.add_argument("--mtg", default=None, help="MTG dataset (save_to_disk folder or Parquet files)")
    p.add_argument("--mtg-split", default="test", help="MTG split (default: test)")
    p.add_argument(
        "--dreambench-samples", default=None, help="DreamBench++ samples folder (<run>/src_image, tgt_image)"
    )
    p.add_argument(
        "--dreambench-ratings", default=None, help="DreamBench++ ratings folder with data_human_rating/ (for M-H)"
    )
    p.add_argument("--cache", default=None, help="score cache file (default: OUT/score-cache.sqlite); can be shared")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0 (default: cpu)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32", help="model dtype (default: float32)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images (or judged pairs) per model call")
    p.add_argument("--max-new-tokens", type=positive_int, default=512, help="judge answer budget (default: 512)")
    p.add_argument(
        "--projection-identities", type=non_negative_int, default=7, help="identities in the 2-D projection plot"
    )
    p.add_argument("--report", action="store_true", help="also render the report into OUT/report")
    add_progress(p)
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("report", help="render an evaluation run as Markdown and self-contained HTML")
    p.add_argument("run", help="run folder holding results.json")
    p.add_argument("--out", default=None, help="output folder (default: RUN/report)")
    p.set_defaults(func=cmd_report)
