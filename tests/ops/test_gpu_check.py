"""benchmarks/gpu_check.sh, the one call that proves the CUDA half on a GPU machine, run here end to end in its
smoke form (no GPU: every step runs its CPU form at toy size), so that the GPU run cannot fail on a typo."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import aesipe

REPO = Path(aesipe.__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = ["setup", "build", "tests", "ptx", "pamr", "label", "amp"]


def _run(out: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=900)


def test_script_parses():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_stops_with_one_line_without_python(tmp_path):
    result = _run(tmp_path / "out", PYTHON=str(tmp_path / "no-python"))
    assert result.returncode == 1
    assert "no usable Python with torch" in result.stdout
    assert "| setup | FAILED" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.slow
def test_smoke_run_passes_every_step(tmp_path):
    # The labelling step's export is kept in the suite's cache folder, so later runs skip it.
    work = REPO / "build" / "test-cache" / "gpu-check"
    result = _run(tmp_path / "out", GPU_CHECK_SMOKE="1", WORK=str(work))
    out = tmp_path / "out"
    assert result.returncode == 0, result.stdout[-3000:] + (out / "gpu_check.log").read_text()[-2000:]
    summary = (out / "summary.md").read_text()
    for step in STEPS:
        assert f"| {step} | ok |" in summary, summary
    assert "smoke run" in summary
    assert "| aesipe-label, local engine, batch 1 |" in (out / "bench_label.md").read_text()
    assert "all losses finite" in (out / "amp_stage1.md").read_text()
    assert "(smoke test, not a figure)" in (out / "RESULTS.md").read_text()
    assert (out / "tests_ops.xml").is_file()
