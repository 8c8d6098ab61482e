from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nearid.cli import main


def test_help_is_fast_and_imports_no_torch() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); from nearid.cli import build_parser; "
        "build_parser().format_help(); "
        "assert 'torch' not in sys.modules and 'pyarrow' not in sys.modules, sorted(sys.modules); "
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert float(out) < 0.5
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "nearid.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "curate" in result.stdout and "validate" in result.stdout
    assert time.perf_counter() - start < 2.0


def test_curate_then_validate(tmp_path, capsys: pytest.CaptureFixture) -> None:
    root = str(tmp_path / "ds")
    args = ["curate", "--source", "procedural", "--identities", "8", "--image-size", "40", "--out", root]
    assert main([*args, "--shard-size", "3", "--no-progress"]) == 0
    assert '"identities": 8' in capsys.readouterr().out
    assert main(["validate", root, "--no-progress"]) == 0
    assert "identities 8 rows/3 shards" in capsys.readouterr().out


def test_bad_arguments_are_clear(tmp_path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["curate", "--source", "syncd-typo", "--out", str(tmp_path)])
    assert "invalid choice" in capsys.readouterr().err
    assert main(["curate", "--source", "procedural", "--identities", "2", "--out", str(tmp_path / "x")]) == 2
    assert "identities must be >= 3" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "nothing-here"), "--no-progress"]) == 1
    assert "[manifest-missing]" in capsys.readouterr().out


def _progress_lines_per_stage(log: str) -> dict[str, int]:
    """Progress log lines between consecutive ``stage NAME:`` lines of the demo flow's log."""
    counts: dict[str, int] = {}
    current = 0
    for line in log.splitlines():
        if "nearid.progress" in line or re.search(r"\[train\] .*train: ", line):
            current += 1
        match = re.search(r"stage (.+?): [\d.]+s", line)
        if match:
            counts[match.group(1)] = current
            current = 0
    counts["after the last stage"] = current
    return counts


def test_demo_smoke(tmp_path) -> None:
    """The CLI entry point end to end, in its own process: it sets up a private embedded Prefect home, logs
    progress at a bounded rate, ends in plain words, and a second run never reuses the first run's folder."""
    out = tmp_path / "run"
    args = ["demo", "--out", str(out), "--identities", "60", "--test-identities", "6", "--val-identities", "4"]
    command = [sys.executable, "-m", "nearid.cli", *args, "--epochs", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "demo finished" in result.stdout and "procedural" in result.stdout
    for words in ("frozen", "trained", "tiny random-weight stand-in", "Shown:", "Look at:", "nearid show"):
        assert words in result.stdout, words
    assert (out / "train" / "evaluation" / "report" / "report.html").is_file()
    assert "Failures fixed by training" in (out / "train" / "evaluation" / "report" / "report.html").read_text()
    assert len(list((out / "sheets").glob("id-*.png"))) == 1
    assert (out / ".prefect").is_dir()  # Prefect's home lives inside the run folder
    assert (out / "cache" / "scores.sqlite").is_file() and not list((out / "train").rglob("*.sqlite"))
    counts = _progress_lines_per_stage(result.stderr)
    assert sum(counts.values()) > 0 and max(counts.values()) <= 40, counts
    assert "\r" not in result.stderr

    def files(folder: Path) -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    first_run = files(out / "train")
    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert str(out / "train-2" / "release") in again.stdout  # a fresh run folder for the second training
    assert {
        p: p.read_bytes() for p in (out / "train").rglob("*") if p.is_file() and p.suffix != ".sqlite"
    } == first_run
