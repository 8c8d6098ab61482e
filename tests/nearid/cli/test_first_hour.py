"""What a newcomer meets first: docs that match the parser, one-line errors, no tracebacks, quiet when asked."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nearid.cli import build_parser, main


README = Path(__file__).resolve().parents[3] / "README.md"
COMMON_FLAGS = {"--help", "--no-progress"}  # the README says once that every command with progress takes it


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nearid.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_readme_table_lists_every_command_and_flag() -> None:
    readme = README.read_text()
    for name, command in _commands().items():
        rows = [line for line in readme.splitlines() if line.startswith(f"| `nearid {name}")]
        assert rows, f"README has no row for `nearid {name}`"
        flags = {o for a in command._actions for o in a.option_strings if o.startswith("--")} - COMMON_FLAGS
        missing = sorted(f for f in flags if not any(f in row for row in rows))
        assert not missing, f"README row of `nearid {name}` misses {missing}"


def test_help_shows_defaults() -> None:
    commands = _commands()
    assert "(default: 2400)" in commands["demo"].format_help()
    assert "(default: 0)" in commands["demo"].format_help()  # a zero default is still shown
    assert "(default: None)" not in "".join(c.format_help() for c in commands.values())


def test_bad_integers_name_no_internal_function(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["curate", "--source", "procedural", "--out", "x", "--identities", "many"])
    err = capsys.readouterr().err
    assert "expected an integer, got 'many'" in err and "_int" not in err


def test_closed_pipe_is_not_a_traceback() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nearid.cli", "generators", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head` that has had enough, closed long before the command has started up
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err


def _offline(tmp_path: Path) -> dict[str, str]:
    """A machine where the hub cannot be reached (a closed loopback port) and nothing is cached."""
    return {"HF_HOME": str(tmp_path / "hf-home"), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}


def test_missing_weights_fail_fast_in_one_line(tmp_path: Path, dataset_copy: str) -> None:
    from generators.run import generate_distractors

    generate_distractors(dataset_copy, ["procedural"], overrides={"resolution": 64}, progress=False)
    config = tmp_path / "paper.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"root": dataset_copy, "sources": ["procedural"]},
                "model": {"backbone": "google/siglip2-so400m-patch14-384"},
                "run": {"out": str(tmp_path / "run")},
            }
        )
    )
    for env in (_offline(tmp_path), {"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}):
        start = time.monotonic()
        result = _cli("train", "--config", str(config), env=env)
        assert time.monotonic() - start < 30
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "google/siglip2-so400m-patch14-384" in result.stderr and "model.backbone" in result.stderr
    assert not (tmp_path / "run").exists()

    result = _cli(
        "evaluate", "--out", str(tmp_path / "eval"), "--data", dataset_copy, "--scorer", "clip",
        "--source", "procedural", "--no-progress", env=_offline(tmp_path),
    )  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "openai/clip-vit-large-patch14" in errors[0] and "--model-dir DIR holding clip-vit/" in errors[0]

    verbose = _cli("-v", "train", "--config", str(config), env=_offline(tmp_path))
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr  # -v still shows where it came from


def test_config_typo_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text(yaml.safe_dump({"data": {"root": "x", "sourcse": ["procedural"]}, "model": {}, "run": {}}))
    result = _cli("train", "--config", str(config))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "sourcse" in result.stderr and "'sources'" in result.stderr


def test_quiet_hides_progress_and_pipes_get_bounded_log_lines(procedural_root: str) -> None:
    logged = _cli("validate", procedural_root, "--no-checksum", env={"NEARID_PROGRESS": "log"})
    assert logged.returncode == 0
    progress_lines = [line for line in logged.stderr.splitlines() if "nearid.progress" in line]
    assert 1 <= len(progress_lines) <= 12 and "100%" in progress_lines[-1] and "row/s" in progress_lines[-1]
    assert "\r" not in logged.stderr

    quiet = _cli("-q", "validate", procedural_root, "--no-checksum", env={"NEARID_PROGRESS": "bar"})
    assert quiet.returncode == 0 and "validate" not in quiet.stderr and "%" not in quiet.stderr


def test_dtype_choices_match_the_generators() -> None:
    from generators.base import DTYPES
    from nearid.cli.generate import DTYPE_CHOICES

    assert (
        set(DTYPE_CHOICES) == {"auto", *DTYPES}
        and build_parser().parse_args(["generate", "--data", "d", "--config", "x"]).dtype == "auto"
    )
