"""The ``nearid`` command line, the top floor: one module per group of sub-commands, each with a ``register``.

Sub-commands import their heavy dependencies only when they run, so ``nearid --help`` answers without loading
torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from nearid import __version__
from nearid.cli import data, demo, evaluate, generate, pipeline, train
from nearid.cli.args import DefaultsHelpFormatter


logger = logging.getLogger("nearid")

COMMAND_GROUPS = (data, generate, train, demo, evaluate, pipeline)
"""In the order ``nearid --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The ``nearid`` parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="nearid",
        description="Near-identity distractors, NearID training and identity-aware embedding benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"nearid {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v: debug)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    for command in sub.choices.values():
        command.formatter_class = DefaultsHelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nearid`` console script."""
    from nearid.common.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose - args.quiet)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:  # includes MetadataError, OfficialLayoutError
        logger.debug("command failed", exc_info=True)  # -v shows the traceback
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # KeyError's str() adds quotes
        print(f"error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`nearid generators --json | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 1
