"""Reports: Markdown and self-contained HTML from a real evaluation run, checked in headless Chromium."""

from __future__ import annotations

import base64
import io
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
