"""The curation report (JSON and Markdown) and the rejects shard of a curation run.

The report makes the paper comparison easy: at full scale the paper reports 19,386 identities and
45,215 images (12,943 with two views, 6,433 with three) split 18,786 / 100 / 500.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from storage import ShardWriter, commit_shards, shard_path
from storage.fs import join, resolve, write_bytes_atomic


PAPER = {
    "identities": 19386,
    "images": 45215,
    "2-view": 12943,
    "3-view": 6433,
    "train": 18786,
    "val": 100,
    "test": 500,
}
REPORT_DIR = "reports"
REJECTS_PATH = shard_path("rejects", 0, prefix="curate")
"""The rejects shard of a curation run (part of the run's plan)."""


@dataclass
class CurationReport:
    """Counts after every stage, the kept identities' shape, and every reject."""

    source: str
    input: str
    config: Any
    stages: list[tuple[str, int]]
    identities_in: int
    kept: int
    views: dict[int, int]
    splits: dict[str, int]
    rejects: list[dict] = field(default_factory=list)

    @property
    def identities_rejected(self) -> int:
        return sum(1 for r in self.rejects if r["view"] is None)

    @property
    def images(self) -> int:
        return sum(n * count for n, count in self.views.items())

    def check_reconciles(self) -> None:
        """identities in = kept + rejected; anything else is a bug, never a silent loss."""
        if self.identities_in != self.kept + self.identities_rejected:
            raise RuntimeError(
                f"curation counts do not reconcile: {self.identities_in} in, {self.kept} kept, "
                f"{self.identities_rejected} rejected"
            )

    def to_dict(self) -> dict:
        identity_reasons = Counter(r["reason"] for r in self.rejects if r["view"] is None)
        view_reasons = Counter(r["reason"] for r in self.rejects if r["view"] is not None)
        ours = {
            "identities": self.kept,
            "images": self.images,
            "2-view": self.views.get(2, 0),
            "3-view": self.views.get(3, 0),
            **self.splits,
        }
        config = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else self.config
        return {
            "source": self.source,
            "input": self.input,
            "config": config,
            "identities_in": self.identities_in,
            "kept": self.kept,
            "rejected_identities": self.identities_rejected,
            "rejected_views": sum(view_reasons.values()),
            "stages": [{"stage": name, "remaining": count} for name, count in self.stages]
            + [{"stage": "kept", "remaining": self.kept}],
            "views": {str(k): v for k, v in self.views.items()},
            "images": self.images,
            "splits": self.splits,
            "identity_rejects_by_reason": dict(sorted(identity_reasons.items())),
            "view_rejects_by_reason": dict(sorted(view_reasons.items())),
            "paper_comparison": {k: {"ours": ours[k], "paper": v} for k, v in PAPER.items()},
        }

    def to_markdown(self) -> str:
        data = self.to_dict()
        lines = [
            f"# Curation report ({self.source})",
            "",
            f"Input: `{self.input}`. {self.identities_in} identities in, {self.kept} kept, "
            f"{self.identities_rejected} rejected ({data['rejected_views']} views rejected).",
            "",
            "| stage | remaining | removed |",
            "|---|---:|---:|",
        ]
        previous = None
        for stage in data["stages"]:
            removed = "" if previous is None else str(previous - stage["remaining"])
            lines.append(f"| {stage['stage']} | {stage['remaining']} | {removed} |")
            previous = stage["remaining"]
        lines += ["", "| | ours | paper | ours / paper |", "|---|---:|---:|---:|"]
        for key, pair in data["paper_comparison"].items():
            lines.append(f"| {key} | {pair['ours']} | {pair['paper']} | {pair['ours'] / pair['paper']:.3f} |")
        for title, reasons in (
            ("Identity rejects", data["identity_rejects_by_reason"]),
            ("View rejects", data["view_rejects_by_reason"]),
        ):
            lines += ["", f"## {title}", ""]
            lines += [f"- `{reason}`: {count}" for reason, count in reasons.items()] or ["- none"]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CurationSummary:
    """What a curation run produced, for the CLI and the flows."""

    root: str
    identities: int
    views: dict[int, int]
    splits: dict[str, int]
    shards_written: int
    shards_skipped: int
    config_hash: str
    seconds: float
    rejected: int = 0


def write_report(root: str, report: CurationReport, rejects_config_hash: str) -> None:
    """Commit the rejects shard and write ``reports/curation.{json,md}`` (atomically)."""
    report.check_reconciles()
    with ShardWriter(root, "rejects", REJECTS_PATH, rejects_config_hash) as writer:
        for row in report.rejects:
            writer.write(row)
    commit_shards(root, [writer.entry])
    fs, base = resolve(root)
    write_bytes_atomic(
        fs, join(base, REPORT_DIR, "curation.json"), (json.dumps(report.to_dict(), indent=2) + "\n").encode()
    )
    write_bytes_atomic(fs, join(base, REPORT_DIR, "curation.md"), report.to_markdown().encode())
