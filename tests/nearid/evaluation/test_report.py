"""Reports: Markdown and self-contained HTML from a real evaluation run, checked in headless Chromium."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nearid.evaluation.evaluate import EvaluationConfig, evaluate, load_results
from nearid.evaluation.projection import kernel_pca
from nearid.evaluation.report import MISSING, build_sections, render_markdown, write_report
from nearid.evaluation.report.gallery import FAILURES, PER_SOURCE, THUMB_PX
from nearid.evaluation.report.sections import per_source_section
from nearid.evaluation.scorers import ScorerSettings, build_scorer
from tests.nearid.evaluation.fixtures import BenchInputs, build_inputs, single_thread


SOURCES = ("flux-fill-512", "qwen-512", "sdxl-512")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TAB_BLUE = np.array([31, 119, 180])  # matplotlib's first colour: the bars and curve of the first scorer


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def run_dir(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    bench: BenchInputs = build_inputs(root, SOURCES, identities=8, test=5, mtg_samples=5)
    config = EvaluationConfig(
        data=bench.data,
        sources=SOURCES,
        mtg=bench.mtg,
        dreambench_samples=bench.dreambench_samples,
        dreambench_ratings=bench.dreambench_ratings,
        batch_size=16,
        progress=False,
    )
    settings = ScorerSettings(model_dir=str(tiny_models_dir), batch_size=16, max_new_tokens=2)
    scorers = [build_scorer(name, settings) for name in ("dinov2", "siglip2-map")]
    evaluate(config, scorers, root / "run")
    judge_config = EvaluationConfig(data=bench.data, sources=SOURCES[:1], conditions=("full",), progress=False)
    evaluate(judge_config, [build_scorer("vlm-judge", settings)], root / "judge-run")
    return root / "run"


def test_markdown_has_every_section_and_table(run_dir: Path) -> None:
    files = write_report(run_dir)
    text = files.markdown.read_text()
    for title in (
        "## Summary",
        "## Per-source discrimination, full image",
        "## Per-source discrimination, foreground only",
        "## Foreground-only condition",
        "## Mind-the-Glitch",
        "## DreamBench++ human alignment",
        "## Work done",
        "## Plots",
    ):
        assert title in text, title
    assert "| dinov2 |" in text and "| siglip2-map |" in text
    assert "| Avg. (every evaluated source) | pooled | 15 |" in text  # 3 sources x 5 test identities
    assert "| human 1 vs human 2 |" in text
    assert sorted(p.name for p in files.figures) == ["mtg_score_cdf.png", "projection.png", "ssr_by_source.png"]
    for figure in files.figures:
        assert f"(figures/{figure.name})" in text and Image.open(figure).size[0] > 300


def test_summary_numbers_come_from_the_results(run_dir: Path) -> None:
    results = load_results(run_dir)
    summary = build_sections(results)[0].blocks[0]
    dinov2 = results["scorers"][0]
    pooled = dinov2["nearid"]["full"]["groups"]["evaluated"]
    row = summary.rows[0]
    assert row[0] == "dinov2" and row[1] == f"{pooled['ssr']:.2f}" and row[2] == f"{pooled['pa']:.2f}"
    assert row[3] == str(pooled["n_samples"]) and row[6] == f"{dinov2['mtg']['full']['mo']:.3f}"
    assert row[8] == f"{dinov2['dreambench']['mh']['categories']['object']['mh']:.3f}"


def test_missing_values_and_the_judge_section(run_dir: Path) -> None:
    results = load_results(run_dir.parent / "judge-run")
    text = render_markdown(results, build_sections(results))
    judge = results["scorers"][0]["judge"]
    assert "## VLM judge answers" in text
    assert f"| vlm-judge | {judge['answers']} | {judge['unparseable']} | 100.00 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| vlm-judge |"))
    assert f"| {MISSING} |" in row  # no MTG and no DreamBench++ for this run
    assert "## Foreground-only condition" not in text and "## Mind-the-Glitch" not in text


def test_html_is_self_contained(run_dir: Path) -> None:
    page = write_report(run_dir).html.read_text()
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(images) == 3
    for data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).format == "PNG"
    assert page.count("<table>") >= 8 and "<script" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere
    thumbs = re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(thumbs) == 3 * PER_SOURCE * len(SOURCES)  # anchor, other view, distractor per example
    for data in thumbs:
        thumb = Image.open(io.BytesIO(base64.b64decode(data)))
        assert thumb.format == "JPEG" and max(thumb.size) <= THUMB_PX
    assert len(page) < 3_000_000


def _chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def _chromium_args(binary: str, profile: Path) -> list[str]:
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]


def test_html_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (install Debian's `chromium` package to run this check)")
    page = write_report(run_dir).html
    shot = tmp_path / "report.png"
    base = _chromium_args(binary, tmp_path / "profile")
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1280,5200", page.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [*base, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert "NearID evaluation report" in dom
    assert dom.count("<table>") >= 8 and dom.count("<tr>") > 30
    assert dom.count('src="data:image/png;base64,') == 3
    assert dom.count('src="data:image/jpeg;base64,') == 3 * PER_SOURCE * len(SOURCES)  # the gallery

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape == (5200, 1280, 3)
    not_white = (pixels < 240).any(axis=2)
    assert not_white.mean() > 0.02 and pixels.std() > 20  # text, table rules and plots, not a blank page
    rows_with_content = np.flatnonzero(not_white.any(axis=1))
    assert rows_with_content.max() - rows_with_content.min() > 2500  # the page runs down past the tables
    blue = (np.abs(pixels - TAB_BLUE).sum(axis=2) < 30).sum()
    assert blue > 2000  # the plots were decoded and painted


def test_kernel_pca_separates_two_clusters() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.02, (6, 8)) + np.eye(8)[0]
    b = rng.normal(0, 0.02, (6, 8)) + np.eye(8)[1]
    coords = kernel_pca(np.vstack([a, b]), 2)
    assert coords.shape == (12, 2)
    first = coords[:, 0]
    assert first[:6].max() < first[6:].min() or first[6:].max() < first[:6].min()
    assert np.allclose(kernel_pca(np.vstack([a, b]), 2), coords)  # deterministic signs
    with pytest.raises(ValueError, match="needs more than 2 points"):
        kernel_pca(a[:2], 2)


def _with_trained_model(results: dict, trained_on: list[str]) -> dict:
    """The run's siglip2-map as the frozen model, failing everywhere, and a trained model winning everywhere but on
    one identity, with the scores set so the galleries' choices are known."""
    frozen = copy.deepcopy(results["scorers"][1])
    trained = copy.deepcopy(frozen)
    trained.update(label="release:trained", training_sources=trained_on)
    for scorer, view, distractor in ((frozen, 0.5, 0.6), (trained, 0.9, 0.1)):
        for values in scorer["nearid"]["full"]["sources"].values():
            sims = values["similarities"]
            sims["views"] = [[view if v is not None else None for v in row] for row in sims["views"]]
            sims["distractors"] = [[distractor if v is not None else None for v in row] for row in sims["distractors"]]
    stubborn = trained["nearid"]["full"]["sources"]["qwen-512"]["similarities"]
    stubborn["distractors"][0] = [0.95 if v is not None else None for v in stubborn["distractors"][0]]
    return {**results, "scorers": [frozen, trained]}


def test_galleries_show_failures_and_fixes(run_dir: Path, tmp_path: Path) -> None:
    results = _with_trained_model(load_results(run_dir), ["flux-fill-512"])
    stubborn = results["scorers"][1]["nearid"]["full"]["sources"]["qwen-512"]["similarities"]["ids"][0]
    galleries = {g.name: g for g in build_sections(results)[-1].blocks}
    assert sorted(galleries) == ["examples", "fixed", "worst"]
    (worst,) = galleries["worst"].items
    assert worst.lines[0].startswith(f"qwen-512 · id {stubborn} ·") and "✗ release:trained" in worst.lines[2]
    fixed = galleries["fixed"].items
    assert len(fixed) == FAILURES and not any(f"qwen-512 · id {stubborn} " in item.lines[0] for item in fixed)
    assert all("✗ siglip2-map: view 0.500 · distractor 0.600" in item.lines[1] for item in fixed)
    for item in fixed:
        assert [Image.open(io.BytesIO(data)).size for data in item.images] == [(THUMB_PX, THUMB_PX)] * 3  # 64 px, up

    (tmp_path / "results.json").write_text(json.dumps(results))
    page = write_report(tmp_path).html.read_text()
    assert "Failures fixed by training" in page and "Worst failures of the trained model" in page


def test_report_groups_follow_the_runs_training_sources(run_dir: Path) -> None:
    results = _with_trained_model(load_results(run_dir), ["flux-fill-512"])
    table = per_source_section(results, "full").blocks[0]
    kinds = {row[0]: row[1] for row in table.rows}
    assert kinds["flux-fill-512"] == "trained on" and kinds["qwen-512"] == kinds["sdxl-512"] == "unseen"
    assert kinds["Avg. (sources this model trained on)"] == "pooled" and "Avg. (training)" not in kinds
    row = next(r for r in table.rows if r[0] == "Avg. (sources unseen in training)")
    unseen = [results["scorers"][1]["nearid"]["full"]["sources"][s] for s in ("qwen-512", "sdxl-512")]
    wins, n = sum(v["sample_wins"] for v in unseen), sum(v["n_samples"] for v in unseen)
    assert row[2] == str(n) == "10" and row[-2] == f"{100 * wins / n:.2f}"  # pooled over the unseen sources
    assert "Trained on: flux-fill-512" in table.caption

    frozen_only = {**results, "scorers": results["scorers"][:1]}  # nothing trained: the paper's kinds
    kinds = {row[0]: row[1] for row in per_source_section(frozen_only, "full").blocks[0].rows}
    assert kinds["flux-fill-512"] == "training" and kinds["sdxl-512"] == "unseen fill"
