"""DreamBench++ layouts (keys, rating files, sample folders) and M-H on a synthetic fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nearid.evaluation.benchmarks.dreambench import mh_correlations, mh_from_files
from nearid.evaluation.metrics import fisher_z_mean, pearson
from nearid.offline.dreambench_layout import write_synthetic_dreambench
from storage.dreambench import (
    METHODS,
    DreamBenchLayoutError,
    canonical_key,
    category_of,
    human_rating_path,
    iter_sample_pairs,
    method_of_run,
    read_human_ratings,
    read_ratings,
    split_key,
    write_ratings,
)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_dreambench(tmp_path_factory.mktemp("dbpp"), subjects=2, prompts=3)


def test_keys_canonical_split_and_category() -> None:
    assert canonical_key("live_subject_animal_00_kitten-0_0") == "live_subject_animal_00_kitten-0"
    assert canonical_key("live_subject_animal_00_kitten-0") == "live_subject_animal_00_kitten-0"
    assert canonical_key("object_20_rubik's_cube-3_0") == "object_20_magic_cube-3"
    assert split_key("live_subject_animal_26_cotton-top_tamarin-4") == ("live_subject_animal_26_cotton-top_tamarin", 4)
    assert split_key("style_07_ukiyo-e-8") == ("style_07_ukiyo-e", 8)
    assert category_of("live_subject_human_03_spider-man-1_0") == "live_subject_human"
    assert category_of("object_00_t-shirt-2") == "object"
    with pytest.raises(DreamBenchLayoutError, match="belongs to no category"):
        category_of("vehicle_00_car-1")
    with pytest.raises(DreamBenchLayoutError, match="not '<collection_id>-<prompt index>'"):
        split_key("object_00_cup")


def test_rating_files_round_trip_and_refuse_bad_content(tmp_path: Path) -> None:
    path = write_ratings(tmp_path / "m.json", {"object_00_cup-1_0": 55.5, "object_00_cup-0_0": float("nan")})
    raw = json.loads(path.read_text())
    assert list(raw) == ["object_00_cup-0_0", "object_00_cup-1_0"] and raw["object_00_cup-0_0"] is None
    ratings = read_ratings(path)
    assert ratings["object_00_cup-1"] == 55.5 and np.isnan(ratings["object_00_cup-0"])
    (tmp_path / "dup.json").write_text(json.dumps({"object_00_cup-1_0": 1, "object_00_cup-1_1": 2}))
    with pytest.raises(DreamBenchLayoutError, match="both name item 'object_00_cup-1'"):
        read_ratings(tmp_path / "dup.json")
    (tmp_path / "text.json").write_text(json.dumps({"object_00_cup-1": "good"}))
    with pytest.raises(DreamBenchLayoutError, match="not a number"):
        read_ratings(tmp_path / "text.json")


def test_sample_folders_pair_references_and_generations(fixture) -> None:
    pairs = list(iter_sample_pairs(fixture.samples))
    assert len(pairs) == 7 * 4 * 2 * 3 and {p.method for p in pairs} == set(METHODS)
    keys = {p.key for p in pairs if p.method == "emu2"}
    assert "object_00_rubik's_cube-0_0" in keys and "live_subject_animal_00_cotton-top_tamarin-2_0" in keys
    assert method_of_run("ip_adapter_plus_vit_huge_sdxl_s0.6") == "ip_adapter_plus_vit_h_sdxl"
    with pytest.raises(DreamBenchLayoutError, match="matches no method"):
        method_of_run("kandinsky_gs4")
    (pairs[0].generated).rename(pairs[0].generated.with_name("9_0.png"))
    try:
        with pytest.raises(DreamBenchLayoutError, match="src_image/ and tgt_image/ differ"):
            list(iter_sample_pairs(fixture.samples))
    finally:
        pairs[0].generated.with_name("9_0.png").rename(pairs[0].generated)


def test_mh_of_the_oracle_metric_and_against_a_hand_computation(fixture) -> None:
    human = read_human_ratings(fixture.ratings)
    assert set(human) == set(METHODS)
    result = mh_from_files(fixture.ratings, fixture.metric)
    assert result["methods"] == list(METHODS)
    for category, values in result["categories"].items():
        assert values["mh"] > 0.8, category  # the metric is the hidden fidelity, which group 1 rates exactly
        assert values["items"] == 7 * 2 * 3 and values["excluded"] == 0
    metric = {m: read_ratings(fixture.metric / f"{m}.json") for m in METHODS}
    rs = []
    for method in METHODS:
        keys = sorted(k for k in human[method][0] if k.startswith("style_"))
        m = np.array([metric[method][k] for k in keys])
        h1 = np.array([human[method][0][k] for k in keys])
        h2 = np.array([human[method][1][k] for k in keys])
        rs.append((pearson(m, h1) + pearson(m, h2)) / 2)
    assert result["categories"]["style"]["mh"] == pytest.approx(fisher_z_mean(rs))


def test_mh_fails_loudly_on_misaligned_keys(fixture, tmp_path: Path) -> None:
    human = read_human_ratings(fixture.ratings)
    metric = {m: read_ratings(fixture.metric / f"{m}.json") for m in METHODS}
    short = {**metric, "emu2": dict(list(metric["emu2"].items())[1:])}
    with pytest.raises(DreamBenchLayoutError, match=r"emu2: metric and human items differ: 1 rated by humans only"):
        mh_correlations(human, short)
    renamed = {**metric, "emu2": {k.replace("kitten", "cat"): v for k, v in metric["emu2"].items()}}
    with pytest.raises(DreamBenchLayoutError, match="scored by the metric only"):
        mh_correlations(human, renamed)
    with pytest.raises(DreamBenchLayoutError, match=r"no metric scores for human-rated method\(s\) \['emu2'\]"):
        mh_correlations(human, {m: v for m, v in metric.items() if m != "emu2"})
    group2 = human_rating_path(fixture.ratings, 2, "emu2")
    saved = group2.read_text()
    try:
        data = json.loads(saved)
        data.pop(next(iter(data)))
        group2.write_text(json.dumps(data))
        with pytest.raises(DreamBenchLayoutError, match="two human groups rate different items"):
            read_human_ratings(fixture.ratings)
    finally:
        group2.write_text(saved)


def test_unscorable_items_are_excluded_and_counted(fixture) -> None:
    human = read_human_ratings(fixture.ratings)
    metric = {m: read_ratings(fixture.metric / f"{m}.json") for m in METHODS}
    first = sorted(k for k in metric["dreambooth_sd"] if k.startswith("object_"))[0]
    metric["dreambooth_sd"][first] = float("nan")
    result = mh_correlations(human, metric)
    assert result["categories"]["object"]["excluded"] == 1
    assert result["categories"]["object"]["methods"]["dreambooth_sd"]["excluded"] == 1
    assert result["categories"]["style"]["excluded"] == 0
