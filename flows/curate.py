"""The ``curate`` flow: a source of identities to ``identities/`` shards, a report and rejects.

Thin by design: the work is :func:`nearid.curation.procedural.curate_procedural` or
:func:`nearid.curation.syncd.curate_syncd`, which the CLI runs without Prefect too. The rebuild flow
calls this one as a subflow.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Literal

from prefect import flow

from flows.logs import run_logger


ARTIFACT_KEY = "nearid-curation"
MAX_REJECT_ROWS = 50
"""Refused rows listed in the artifact; all of them are in the dataset's ``rejects`` table."""


def _cell(value: Any) -> str:
    """A markdown table cell: no pipes or line breaks from the data."""
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ").strip()


def curation_markdown(out: str, report: dict[str, Any], rejects: list[dict[str, Any]], summary: Any) -> str:
    """The curation run as markdown: counts per split, refusals by reason, and the first refused rows."""
    lines = [
        f"# Curation of `{out}` ({report['source']})",
        "",
        f"{report['identities_in']} identities in, {report['kept']} kept, {report['rejected_identities']} refused "
        f"({report['rejected_views']} views refused); shards: {summary.shards_written} written, "
        f"{summary.shards_skipped} already complete; config hash `{summary.config_hash}`.",
        "",
        "| split | identities |",
        "|---|---:|",
        *(f"| {split} | {count} |" for split, count in report["splits"].items()),
        f"| **total** | {sum(report['splits'].values())} |",
        "",
        "| refused | reason | count |",
        "|---|---|---:|",
    ]
    by_reason = [("identity", r, n) for r, n in report["identity_rejects_by_reason"].items()]
    by_reason += [("view", r, n) for r, n in report["view_rejects_by_reason"].items()]
    lines += [f"| {kind} | `{reason}` | {count} |" for kind, reason, count in by_reason] or ["| - | none | 0 |"]
    if rejects:
        shown = rejects[:MAX_REJECT_ROWS]
        lines += ["", f"## Refused rows ({len(shown)} of {len(rejects)}; all in the `rejects` table)", ""]
        lines += ["| id | view | reason | detail | source |", "|---:|---:|---|---|---|"]
        lines += [
            f"| {_cell(r['id'])} | {_cell(r['view'])} | `{_cell(r['reason'])}` | {_cell(r['detail'])} | "
            f"{_cell(r['source'])} |"
            for r in shown
        ]
    return "\n".join(lines) + "\n"


def _curation_artifact(out: str, summary: Any) -> None:
    """A markdown artifact of the run (the report and the refused rows the run wrote), under a stable key so the
    UI shows its history."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    from nearid.curation.report import REPORT_DIR
    from storage import TableReader, load_manifest
    from storage.fs import join, resolve

    if FlowRunContext.get() is None:  # called with .fn(): no run to attach it to
        return
    fs, base = resolve(out)
    report = json.loads(fs.cat_file(join(base, REPORT_DIR, "curation.json")))
    manifest = load_manifest(out)
    rejects = []
    if manifest.table("rejects"):
        rows = TableReader(out, "rejects", manifest).iter_rows(decode=False)
        rejects = [row for row in rows if row["stage"] == "curate"]
    markdown = curation_markdown(out, report, rejects, summary)
    create_markdown_artifact(markdown, key=ARTIFACT_KEY, description=f"curation of {out}")


@flow(name="curate")
def curate_flow(
    out: str,
    source: Literal["procedural", "syncd"] = "procedural",
    input_dir: str | None = None,
    identities: int = 1000,
    image_size: int = 512,
    seed: int = 0,
    shard_size: int = 256,
    workers: int = 1,
    force: bool = False,
    n_val: int | None = None,
    n_test: int | None = None,
) -> dict:
    """Curate identities into the dataset root ``out``; returns the curation summary as a dict."""
    logger = run_logger()
    if source == "procedural":
        from nearid.common.procedural import ProceduralConfig
        from nearid.curation.procedural import curate_procedural

        config = ProceduralConfig(identities=identities, image_size=image_size, seed=seed)
        summary = curate_procedural(
            out,
            config,
            shard_size=shard_size,
            n_val=n_val,
            n_test=n_test,
            workers=workers,
            force=force,
            progress=True,  # bounded log lines inside flows (nearid.common.progress)
        )
    elif source == "syncd":
        from nearid.curation.syncd import SyncdCurationConfig, curate_syncd

        if input_dir is None:
            raise ValueError("source 'syncd' needs input_dir, the SynCD release folder")
        config = SyncdCurationConfig(shard_size=shard_size, n_val=n_val, n_test=n_test)
        summary = curate_syncd(input_dir, out, config, workers=workers, force=force)
    else:
        raise ValueError(f"unknown source {source!r}: expected 'procedural' or 'syncd'")
    logger.info(
        "curated %d identities into %s (%d shards written, %d skipped, %d rejected)",
        summary.identities,
        out,
        summary.shards_written,
        summary.shards_skipped,
        summary.rejected,
    )
    _curation_artifact(out, summary)
    return asdict(summary)
