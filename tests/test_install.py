"""The two README commands install exactly what the suite was run with: the lock file, the torch spec, no warnings."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-").replace(".", "-")


def _locked() -> dict[str, str]:
    lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    return {_name(line): line.split("==", 1)[1] for line in lines}


def test_environment_matches_the_lock_file() -> None:
    locked = _locked()
    drift = {}
    for name, version in locked.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            drift[name] = (version, installed)
    assert not drift, f"installed versions differ from requirements.lock (run `make install`): {drift}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    unlocked = sorted(_name(r) for r in wanted if _name(r) not in ("torch", "nearid") and _name(r) not in locked)
    assert not unlocked, f"dependencies missing from requirements.lock: {unlocked}"


def test_make_installs_through_the_lock_and_honours_torch_spec() -> None:
    dry = subprocess.run(
        ["make", "-n", "install", "TORCH_SPEC=torch==2.12.0"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert 'pip install --quiet "torch==2.12.0"' in dry  # another spec reinstalls torch into the existing .venv
    assert "-c requirements.lock" in dry
    assert re.search(r"touch \.venv/\.installed-\d+", dry)


def test_building_the_package_prints_no_warning(tmp_path: Path) -> None:
    build_existed = (ROOT / "build").exists()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if not build_existed:
        shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools builds in the tree
    assert result.returncode == 0, result.stderr
    noise = [line for line in result.stderr.splitlines() if re.search(r"warn|deprecat", line, re.I)]
    noise = [line for line in noise if "is ignored: it is neither a file nor a directory" not in line]  # pip.conf
    assert not noise, "\n".join(noise)
    (wheel,) = tmp_path.glob("nearid-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"nearid/py.typed", "storage/py.typed", "generators/py.typed", "flows/py.typed"} <= set(names)
