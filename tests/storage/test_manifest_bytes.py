"""A manifest that is not UTF-8 text is a clear ManifestError (validate reports it as manifest-invalid)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.manifest import ManifestError, load_manifest
from storage.validate import validate


def test_a_manifest_that_is_not_utf8_is_a_manifest_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_bytes(b'{"format": "\xff"}')
    with pytest.raises(ManifestError, match=r"manifest\.json is not UTF-8 text"):
        load_manifest(str(tmp_path))
    assert [p.code for p in validate(str(tmp_path), progress=False)] == ["manifest-invalid"]
