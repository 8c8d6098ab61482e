"""What the bad-input corpus shares: a hostile PNG header, the CLI runner and the error codes of a root."""

from __future__ import annotations

import struct
import zlib

from nearid.cli import main
from storage.validate import validate


SIZE = 64


def huge_png_header(width: int = 13000, height: int = 13000) -> bytes:
    """A PNG that declares a huge size in its header (no pixel data follows): refused before decoding."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b"")


def errors_of(root: str) -> list[str]:
    return [p.code for p in validate(root, progress=False) if p.severity == "error"]


def run_cli(args: list[str]) -> int:
    """``nearid ARGS`` in-process; argparse's own refusals exit, ours return."""
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code)
