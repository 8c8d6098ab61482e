"""Acceptance: the headline numbers, the rule, the record, and candidates read from a results file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from nearid.model.acceptance import ACCEPTED_FILE, accept_model, accepted_record, candidate_record, headline


def results(ssr_new: float, complete_primary: bool, label: str = "release:x") -> dict:
    groups = {"evaluated": {"ssr": ssr_new - 1, "pa": 50.0}}
    if complete_primary:
        groups["primary"] = {"ssr": ssr_new, "pa": 60.0}
    return {"scorers": [{"label": label, "name": "release", "model": "/m/x", "nearid": {"full": {"groups": groups}}}]}


def test_headline_prefers_the_primary_group() -> None:
    assert headline(results(70.0, True), "release:x") == {"group": "primary", "ssr": 70.0, "pa": 60.0}
    assert headline(results(70.0, False), "release:x") == {"group": "evaluated", "ssr": 69.0, "pa": 50.0}
    assert headline(results(70.0, True), "release:other") is None


def test_acceptance_rule(tmp_path: Path) -> None:
    first = {"model": "a", "metrics": {"group": "primary", "ssr": 80.0, "pa": 90.0}}
    decision = accept_model(tmp_path, first, tolerance=1.0)
    assert decision.accepted and decision.previous is None
    assert decision.message == "accepted the new model a: primary SSR 80.00 (PA 90.00); no model was accepted before"
    slightly_worse = {"model": "b", "metrics": {"group": "primary", "ssr": 79.5, "pa": 89.0}}
    assert accept_model(tmp_path, slightly_worse, tolerance=1.0).accepted  # within tolerance: accepted
    worse = {"model": "c", "metrics": {"group": "primary", "ssr": 70.0, "pa": 80.0}}
    decision = accept_model(tmp_path, worse, tolerance=1.0)
    assert not decision.accepted and decision.previous["model"] == "b"
    assert "rejected (regression)" in decision.message and "SSR 70.00" in decision.message
    assert "the accepted model b has 79.50 (PA 89.00); tolerance 1.0 points" in decision.message
    assert accepted_record(tmp_path)["model"] == "b"  # a regression never replaces it
    assert sorted(p.name for p in tmp_path.iterdir()) == [".accepted.lock", ACCEPTED_FILE]  # no temporary left
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        accept_model(tmp_path, worse, tolerance=-1)


def test_concurrent_acceptances_compare_with_what_the_other_wrote(tmp_path: Path) -> None:
    """Two candidates decided at once, many times over: the decisions are serialised, so the one that regresses
    against the other never overwrites it (the good model ends accepted whichever goes first)."""
    good = {"model": "good", "metrics": {"group": "primary", "ssr": 90.0, "pa": 90.0}}
    bad = {"model": "bad", "metrics": {"group": "primary", "ssr": 49.5, "pa": 49.0}}
    for round_ in range(20):
        folder = tmp_path / str(round_)
        accept_model(folder, {"model": "base", "metrics": {"group": "primary", "ssr": 50.0, "pa": 50.0}}, 1.0)
        start = threading.Barrier(2)

        def decide(candidate: dict, folder: Path = folder, start: threading.Barrier = start) -> None:
            start.wait(timeout=10)
            accept_model(folder, candidate, 1.0)

        threads = [threading.Thread(target=decide, args=(c,)) for c in (good, bad)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert accepted_record(folder)["model"] == "good"


def test_candidates_come_from_a_results_file(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps(results(70.0, True)))
    record = candidate_record(tmp_path)
    assert record == {
        "model": "/m/x",
        "results": str(tmp_path / "results.json"),
        "metrics": headline(results(70.0, True), "release:x"),
    }
    two = results(70.0, True)
    two["scorers"] += results(60.0, False, "release:y")["scorers"]
    (tmp_path / "two.json").write_text(json.dumps(two))
    with pytest.raises(ValueError, match="2 release models"):
        candidate_record(tmp_path / "two.json")
    assert candidate_record(tmp_path / "two.json", "release:y")["metrics"]["ssr"] == 59.0
    with pytest.raises(FileNotFoundError, match="no results.json"):
        candidate_record(tmp_path / "nowhere")
