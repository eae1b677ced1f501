"""Faults of the machine end in one line, lose nothing, and resume (issue: trust by construction): a disk that
fills up (or turns read-only) mid-run stops the run -- it is no image's fault -- with one line; every mask
already written is whole and is kept by the re-run."""
from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aesipe.infer.cli import app
from aesipe.utils.labelpng import load_label_png

runner = CliRunner()

_FULL_AFTER = """
import errno, os, sys
from aesipe.utils import atomic
real, writes = atomic.atomic_open, []
def full_disk(path, suffix=".tmp"):
    writes.append(path)
    if len(writes) > {after}:
        raise OSError(errno.{code}, os.strerror(errno.{code}), str(path))
    return real(path, suffix)
atomic.atomic_open = full_disk
from aesipe.infer.cli import main
sys.argv = ["aesipe-label", *{args!r}]
main()
"""


def _masks(out: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(out / "masks").as_posix(): load_label_png(p) for p in sorted((out / "masks").rglob("*.png"))}


@pytest.mark.parametrize("code, after", [("ENOSPC", 3), ("ENOSPC", 0), ("EDQUOT", 2), ("EROFS", 1)])
def test_a_full_disk_stops_the_run_in_one_line_and_the_rerun_resumes(seg_onnx, photo_folder, tmp_path, code, after):
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert runner.invoke(app, [str(seg_onnx), str(photo_folder), str(clean)]).exit_code == 0
    args = [str(seg_onnx), str(photo_folder), str(out), "--workers", "1", "--batch-size", "1", "--overlay"]
    run = subprocess.run([sys.executable, "-c", _FULL_AFTER.format(after=after, code=code, args=args)],
                         capture_output=True, text=True, timeout=300)
    lines = [line for line in run.stderr.splitlines() if line.startswith("aesipe-label:")]
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert len(lines) == 1 and f"writing into {out} failed: {__import__('os').strerror(getattr(errno, code))}" in lines[0]
    written = _masks(out)
    expected = _masks(clean)
    assert len(written) < 5 and all(np.array_equal(written[k], expected[k]) for k in written)  # whole, never half
    again = runner.invoke(app, [str(seg_onnx), str(photo_folder), str(out), "--overlay"])
    assert again.exit_code == 0 and f"{len(written)} masks still valid" in again.output, again.output
    masks = _masks(out)
    assert masks.keys() == expected.keys() and all(np.array_equal(masks[k], expected[k]) for k in masks)
