"""The ``curate`` flow: a source of identities to ``identities/`` shards, a report and rejects.

Thin by design: the work is :func:`nearid.curation.procedural.curate_procedural` or
:func:`nearid.curation.syncd.curate_syncd`, which the CLI runs without Prefect too. The rebuild flow
calls this one as a subflow.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

from prefect import flow

from flows.logs import run_logger


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
    return asdict(summary)
