"""End to end on the procedural dataset with the tiny scorers: every scorer runs, the cache cuts work to the unique
inputs and to nothing on a second run, and the numbers match a naive recomputation."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import AutoImageProcessor, SiglipVisionModel

from nearid.cli.evaluate import CONDITION_CHOICES, SPLIT_CHOICES, register
from nearid.evaluation.benchmarks.nearid import NearIDBenchmark
from nearid.evaluation.evaluate import EvaluationConfig, evaluate, load_results
from nearid.evaluation.images import apply_foreground
from nearid.evaluation.metrics import SOURCES, discrimination
from nearid.evaluation.scorers import ScorerSettings, build_scorer
from nearid.model.release import save_release
from storage import TableReader
from storage.codecs import decode_mask, decode_rgb
from storage.dreambench import read_ratings
from tests.nearid.evaluation.fixtures import BenchInputs, build_inputs, single_thread


EMBEDDING_SCORERS = ("siglip2-map", "siglip2-mean", "clip", "dinov2")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> BenchInputs:
    return build_inputs(tmp_path_factory.mktemp("bench"), SOURCES)


@pytest.fixture(scope="module")
def release_dir(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import copy

    import torch

    backbone = SiglipVisionModel.from_pretrained(tiny_models_dir / "siglip2")
    head = copy.deepcopy(backbone.head)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = tmp_path_factory.mktemp("release") / "nearid-tiny"
    save_release(backbone, head, AutoImageProcessor.from_pretrained(tiny_models_dir / "siglip2", backend="pil"), out)
    return out


def _config(bench: BenchInputs, **overrides: Any) -> EvaluationConfig:
    fields = {
        "data": bench.data,
        "sources": bench.sources,
        "mtg": bench.mtg,
        "dreambench_samples": bench.dreambench_samples,
        "dreambench_ratings": bench.dreambench_ratings,
        "batch_size": 16,
        "progress": False,
    }
    return EvaluationConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def run(bench: BenchInputs, tiny_models_dir: Path, release_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    settings = ScorerSettings(model_dir=str(tiny_models_dir), batch_size=16)
    scorers = [build_scorer(name, settings) for name in (*EMBEDDING_SCORERS, str(release_dir))]
    out = tmp_path_factory.mktemp("run")
    first = evaluate(_config(bench), scorers, out)
    second = evaluate(
        _config(bench), [build_scorer(name, settings) for name in (*EMBEDDING_SCORERS, str(release_dir))], out
    )
    return out, first, second


def _slot_counts(root: str) -> tuple[int, int]:
    """Test-split views and distractors of one source, counted from the tables themselves."""
    test_ids, views = set(), 0
    for row in TableReader(root, "identities").iter_rows(columns=["id", "split", "n_images"], decode=False):
        if row["split"] == "test":
            test_ids.add(row["id"])
            views += row["n_images"]
    distractors = 0
    for row in TableReader(root, "distractors/procedural").iter_rows(decode=False):
        if row["id"] in test_ids:
            distractors += sum(row[f"nimg{k}"] is not None for k in (1, 2, 3))
    return views, distractors


def test_every_scorer_runs_on_every_benchmark(run) -> None:
    _, first, _ = run
    labels = [s["label"] for s in first["scorers"]]
    assert labels == [*EMBEDDING_SCORERS, "release:nearid-tiny"]
    for scorer in first["scorers"]:
        for condition in CONDITION_CHOICES:
            groups = scorer["nearid"][condition]["groups"]
            assert set(groups) == {"primary", "all", "training", "unseen_fill", "unseen_canny", "unseen", "evaluated"}
            assert groups["all"]["n_samples"] == 9 * 6 and groups["primary"]["n_samples"] == 7 * 6
            assert 0.0 <= groups["all"]["ssr"] <= 100.0 and 0.0 <= groups["all"]["pa"] <= 100.0
            sources = scorer["nearid"][condition]["sources"]
            assert list(sources) == list(SOURCES)  # Table 5 order
            assert len({json.dumps(v, sort_keys=True) for v in sources.values()}) == 1  # identical copies
            mtg = scorer["mtg"][condition]
            assert mtg["n_samples"] == 6 and mtg["n_trials"] == 12
            assert (mtg["mo"] is None) == (mtg["mo_error"] is not None)
        assert set(scorer["dreambench"]["mh"]["categories"]) == {
            "object",
            "live_subject_animal",
            "live_subject_human",
            "style",
        }
        projection = scorer["projection"]
        assert projection["source"] == "flux-fill-512" and len(projection["identities"]) == 6
        assert all(np.isfinite([p["x"], p["y"]]).all() for p in projection["points"])
    fingerprints = {s["fingerprint"] for s in first["scorers"]}
    assert len(fingerprints) == len(first["scorers"])


def test_cache_cuts_work_to_unique_images_and_to_zero_on_a_second_run(run, bench: BenchInputs) -> None:
    out, first, second = run
    views, distractors = _slot_counts(bench.data)
    conditions = len(CONDITION_CHOICES)
    for scorer in first["scorers"]:
        work = scorer["work"]["nearid"]
        # naive: every source embeds its views and distractors again; unique: the nine sources share the views, and
        # here their distractors too (the same bytes registered nine times)
        assert work["naive"] == 9 * (views + distractors) * conditions
        assert work["unique"] == (views + distractors) * conditions
        assert work["computed"] == work["unique"] and work["cache_hits"] == 0
        assert scorer["work"]["mtg"]["computed"] == 4 * 6 * conditions
        assert scorer["work"]["dreambench"]["naive"] == 2 * 7 * 4 * 3
    for scorer in second["scorers"]:
        for benchmark in ("nearid", "mtg", "dreambench"):
            work = scorer["work"][benchmark]
            assert work["computed"] == 0 and work["model_calls"] == 0 and work["cache_hits"] == work["unique"]
    for a, b in zip(first["scorers"], second["scorers"], strict=True):
        assert a["nearid"] == b["nearid"] and a["mtg"] == b["mtg"] and a["dreambench"] == b["dreambench"]
    assert load_results(out)["scorers"][0]["work"]["nearid"]["computed"] == 0  # the file holds the second run


def test_pipeline_numbers_match_a_naive_recomputation(run, bench: BenchInputs, tiny_models_dir: Path) -> None:
    """SSR/PA of siglip2-map, full image, recomputed by decoding, embedding and comparing directly."""
    _, first, _ = run
    scorer = build_scorer("siglip2-map", ScorerSettings(model_dir=str(tiny_models_dir)))
    identities = {r["id"]: r for r in TableReader(bench.data, "identities").iter_rows() if r["split"] == "test"}
    rows = {r["id"]: r for r in TableReader(bench.data, "distractors/qwen-512").iter_rows() if r["id"] in identities}
    ids = sorted(rows)
    pos = np.zeros((len(ids), 3, 3))
    own = np.zeros((len(ids), 3))
    views = np.zeros((len(ids), 3), dtype=bool)
    for r, identity_id in enumerate(ids):
        images = [identities[identity_id][f"images{k}"] for k in (1, 2, 3)]
        present = [k for k in range(3) if images[k] is not None]
        vectors = scorer.embed([images[k] for k in present] + [rows[identity_id][f"nimg{k + 1}"] for k in present])
        v, d = vectors[: len(present)], vectors[len(present) :]
        for a, i in enumerate(present):
            views[r, i] = True
            own[r, i] = float(v[a] @ d[a])
            for b, j in enumerate(present):
                pos[r, i, j] = float(v[a] @ v[b])
    expected = discrimination(pos, own, views, views).to_dict()
    got = first["scorers"][0]["nearid"]["full"]["sources"]["qwen-512"]
    assert {k: got[k] for k in expected} == pytest.approx(expected)
    assert got["rows"] == len(ids) and got["failed_trials"] == 0


def test_foreground_inputs_black_out_the_background_of_views_and_their_distractors(bench: BenchInputs) -> None:
    benchmark = NearIDBenchmark(bench.data, "test", ["sdxl-512"], ("full", "foreground"), progress=False)
    identity_id = sorted(benchmark.rows["sdxl-512"])[0]
    identity = TableReader(bench.data, "identities").get(identity_id, decode=False)
    row = TableReader(bench.data, "distractors/sdxl-512").get(identity_id, decode=False)
    mask = decode_mask(identity["masks1"]["bytes"])
    views, distractors = benchmark._keys("sdxl-512", identity_id, "foreground")
    full_views, full_distractors = benchmark._keys("sdxl-512", identity_id, "full")
    assert views[0] not in (None, full_views[0]) and distractors[0] not in (None, full_distractors[0])

    view = np.asarray(benchmark.load(("foreground", views[0])))
    expected = np.asarray(apply_foreground(decode_rgb(identity["images1"]["bytes"]), mask))
    assert np.array_equal(view, expected)
    kept = view.any(axis=2)
    assert 0 < kept.sum() < kept.size  # the object stays, the background goes
    assert np.array_equal(view[kept], np.asarray(decode_rgb(identity["images1"]["bytes"]))[kept])

    distractor_full = np.asarray(decode_rgb(row["nimg1"]["bytes"]))
    distractor = np.asarray(benchmark.load(("foreground", distractors[0])))
    assert np.array_equal(distractor, np.asarray(apply_foreground(decode_rgb(row["nimg1"]["bytes"]), mask)))
    black = ~distractor.any(axis=2)
    assert abs(black.mean() - (~kept).mean()) < 0.05  # the view's mask, scaled to the distractor's size
    assert not np.array_equal(distractor, distractor_full)


def test_dreambench_rating_files_follow_the_published_layout(run, bench: BenchInputs) -> None:
    from nearid.evaluation.benchmarks.dreambench import mh_from_files

    out, first, _ = run
    scorer = first["scorers"][3]  # dinov2
    folder = out / "dreambench" / "dinov2"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{m}.json"
        for m in (
            "blip_diffusion",
            "dreambooth_lora_sdxl",
            "dreambooth_sd",
            "emu2",
            "ip_adapter_plus_vit_h_sdxl",
            "ip_adapter_vit_g_sdxl",
            "textual_inversion_sd",
        )
    )
    raw = json.loads((folder / "emu2.json").read_text())
    assert "object_00_rubik's_cube-0_0" in raw and all(-100.0 <= v <= 100.0 for v in raw.values())
    assert "object_00_magic_cube-0" in read_ratings(folder / "emu2.json")
    again = mh_from_files(bench.dreambench_ratings, folder)
    assert again == scorer["dreambench"]["mh"]  # the files hold the exact scores


def test_judge_runs_and_reports_unparseable_answers(bench: BenchInputs, tiny_models_dir: Path, tmp_path: Path) -> None:
    settings = ScorerSettings(model_dir=str(tiny_models_dir), batch_size=16, max_new_tokens=4)
    config = EvaluationConfig(
        data=bench.data, sources=("flux-fill-512",), conditions=("full",), mtg=bench.mtg, batch_size=16, progress=False
    )
    results = evaluate(config, [build_scorer("vlm-judge", settings)], tmp_path / "judge")
    entry = results["scorers"][0]
    judge = entry["judge"]
    unique_pairs = entry["work"]["nearid"]["unique"] + entry["work"]["mtg"]["unique"]
    assert judge["answers"] == unique_pairs > 0
    assert judge["unparseable"] == sum(judge["problems"].values()) == unique_pairs  # random weights answer garbage
    source = entry["nearid"]["full"]["sources"]["flux-fill-512"]
    assert source["failed_trials"] == source["n_trials"] > 0 and source["trial_wins"] == 0  # counted, as lost
    mtg = entry["mtg"]["full"]
    assert mtg["failed_trials"] == mtg["n_trials"] and mtg["mo"] is None and mtg["mo_samples"] == 0
    assert "projection" not in entry
    rerun = evaluate(config, [build_scorer("vlm-judge", settings)], tmp_path / "judge")
    assert rerun["scorers"][0]["work"]["nearid"]["computed"] == 0 and rerun["scorers"][0]["judge"] == judge


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nearid")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_evaluate_and_report(bench: BenchInputs, tiny_models_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli-run"
    args = _parse(
        [
            "evaluate",
            "--data",
            bench.data,
            "--out",
            str(out),
            "--scorer",
            "dinov2",
            "--model-dir",
            str(tiny_models_dir),
        ]
        + ["--source", "flux-fill-512", "--source", "sdxl-1024", "--condition", "full", "--no-progress", "--report"]
        + ["--mtg", bench.mtg, "--batch-size", "8"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "NearID full" in printed and "MTG    full" in printed and "work nearid" in printed
    results = load_results(out)
    assert results["benchmarks"]["nearid"]["sources"] == ["flux-fill-512", "sdxl-1024"]
    assert (out / "report" / "report.html").is_file() and (out / "score-cache.sqlite").is_file()
    args = _parse(["report", str(out), "--out", str(tmp_path / "elsewhere")])
    assert args.func(args) == 0
    assert (tmp_path / "elsewhere" / "report.md").read_text().startswith("# NearID evaluation report")


def test_cli_choices_match_the_library() -> None:
    from nearid.evaluation.benchmarks.nearid import SPLITS
    from nearid.evaluation.images import CONDITIONS

    assert CONDITION_CHOICES == CONDITIONS and SPLIT_CHOICES == SPLITS
    with pytest.raises(SystemExit):
        _parse(["evaluate", "--out", "x", "--scorer", "clip", "--model", "no-equals-sign"])


def test_bad_configurations_are_refused(bench: BenchInputs) -> None:
    with pytest.raises(ValueError, match="nothing to evaluate"):
        EvaluationConfig()
    with pytest.raises(ValueError, match="unknown split"):
        EvaluationConfig(data=bench.data, split="dev")
    with pytest.raises(ValueError, match="unknown condition"):
        EvaluationConfig(data=bench.data, conditions=("background",))
    with pytest.raises(ValueError, match="need DreamBench"):
        EvaluationConfig(data=bench.data, dreambench_ratings=bench.dreambench_ratings)
    with pytest.raises(ValueError, match=r"no distractors for source\(s\) \['powerpaint-2'\]; available: "):
        NearIDBenchmark(bench.data, "test", ["powerpaint-2"], progress=False)
    with pytest.raises(ValueError, match="given more than once"):
        evaluate(_config(bench), [build_scorer("clip"), build_scorer("clip")], bench.data + "-unused")
