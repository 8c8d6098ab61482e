"""GPU benchmark scripts cannot run in CI; their ``--smoke`` mode runs the same code on the CPU, so a lucky session
with an H200 does not spend its minutes on a broken script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_gpu_generation_smoke() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_generation.py", "--smoke", "--batches", "1,2", "--repeats", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    families = {f["family"] for f in figures}
    assert families == {"flux-fill", "flux-canny", "sdxl-inpaint", "qwen-inpaint", "powerpaint"}
    assert all(f["s_per_step"] > 0 and f["s_per_image"] > 0 for f in figures) and len(figures) == 10
