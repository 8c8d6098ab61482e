"""Argument types and helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where it is nothing (None, False) or already said."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
            or "default" in text
        ):
            return text
        return super()._get_help_string(action)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def key_value(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE parsed as JSON when it can be (numbers, booleans), else kept as text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_progress(parser: argparse.ArgumentParser) -> None:
    """The ``--no-progress`` flag of every command that shows progress bars."""
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def print_summary(title: str, summary: object) -> None:
    """A dataclass summary as indented JSON under a title."""
    print(f"{title}: {json.dumps(asdict(summary), indent=2)}")
