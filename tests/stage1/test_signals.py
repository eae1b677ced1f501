"""SIGTERM and SIGHUP are Ctrl-C: sent to a CLI that is mid-work, they end in one line and exit 143 / 129
after the same clean-up (training keeps its last checkpoint, labelling writes its report), and a re-run
resumes. The signals are sent from outside, to a subprocess that says when it is mid-work."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aesipe.train import checkpointing as ckpt_io
from aesipe.train.cli import app

REPO = Path(__file__).resolve().parents[2]
MESSAGE = "terminated ({name}); finished outputs are kept and a re-run resumes"


def _start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _when_ready(process: subprocess.Popen, ready: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None:
            raise AssertionError(f"ended before it was mid-work: {process.communicate()[1][-2000:]}")
        assert time.monotonic() < deadline, "never got mid-work"
        time.sleep(0.05)


def _ends_in_one_line(process: subprocess.Popen, prog: str, signum: int) -> str:
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 128 + signum, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip() and "%|" not in line]
    assert lines[-1] == f"{prog}: " + MESSAGE.format(name=signal.Signals(signum).name), stderr[-2000:]
    assert "Traceback" not in stderr
    return stderr


# At step 3 (after the checkpoint of step 2) stage 1 says it is mid-work and keeps working, slowly.
_TRAIN_MID_WORK = """
import sys, time
from pathlib import Path
from aesipe.train.cli import main
from aesipe.train.stages import stage1
READY, real_losses, calls = Path(sys.argv[1]), stage1.stage1_losses, []
def losses(*a, **k):
    calls.append(1)
    if len(calls) == 3:
        READY.touch()
        time.sleep(120)  # the signal interrupts this sleep
    return real_losses(*a, **k)
stage1.stage1_losses = losses
sys.argv = ["aesipe-train", "train", *sys.argv[2:]]
main()
"""


@pytest.mark.slow  # a training in a subprocess, then its resumption: ~30 s on 2 busy cores
def test_training_keeps_its_checkpoint_and_a_rerun_resumes(tmp_path, make_overrides, signum=signal.SIGTERM):
    run, ready = tmp_path / "run", tmp_path / "ready"
    overrides = make_overrides()  # 4 steps, a checkpoint every 2
    process = _start(_TRAIN_MID_WORK, str(ready), str(run), *overrides)
    _when_ready(process, ready)
    process.send_signal(signum)
    _ends_in_one_line(process, "aesipe-train", signum)
    assert ckpt_io.load_checkpoint(run / "stage1" / "checkpoints" / "last.pt")["step"] == 2
    assert not (run / "stage1" / "final.pt").exists()
    again = CliRunner().invoke(app, ["train", str(run), *overrides])
    assert again.exit_code == 0, again.output
    assert ckpt_io.load_checkpoint(run / "stage1" / "final.pt")["step"] == 4
    with (run / "stage1" / "log.csv").open() as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["1", "2", "3", "4"]  # resumed at 3


# From the fourth image on, every decode is slow: the parent has seconds to send the signal mid-folder.
_LABEL_MID_WORK = """
import sys, time
from pathlib import Path
from aesipe import imaging
READY, real_read, calls = Path(sys.argv[1]), imaging.read_image, []
def slow_read(*a, **k):
    calls.append(1)
    if len(calls) >= 4:
        READY.touch()
        time.sleep(0.5)
    return real_read(*a, **k)
imaging.read_image = slow_read  # before aesipe.infer imports it
from aesipe.infer.cli import main
sys.argv = ["aesipe-label", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_labelling_writes_its_report_and_a_rerun_labels_the_rest(tmp_path, signum):
    photos, out, ready = tmp_path / "photos", tmp_path / "out", tmp_path / "ready"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for index in range(24):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(photos / f"p{index:02d}.png")
    model = str(REPO / "tests/fixtures/tiny_segmenter.onnx")
    process = _start(_LABEL_MID_WORK, str(ready), model, str(photos), str(out), "--workers", "2", "--batch-size", "1")
    _when_ready(process, ready)
    process.send_signal(signum)
    _ends_in_one_line(process, "aesipe-label", signum)
    report = json.loads((out / "report.json").read_text())
    done = report["summary"]["ok"]
    assert report["summary"]["interrupted"] and 0 < done < 24
    assert len(list((out / "masks").glob("*.png"))) == done
    again = subprocess.run([str(Path(sys.executable).parent / "aesipe-label"), model, str(photos), str(out)],
                           capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{done} masks still valid, {24 - done} to label" in again.stderr + again.stdout
    assert len(list((out / "masks").glob("*.png"))) == 24


# The clean-up of a command takes a while; a second signal then must not cut it short.
_SLOW_CLEANUP = """
import sys, time
from pathlib import Path
import typer
from aesipe.utils.cli import make_app, run_cli
app = make_app("aesipe-test")
@app.command()
def work(ready: Path, done: Path):
    try:
        ready.touch()
        time.sleep(120)
    finally:
        Path(str(ready) + ".cleaning").touch()
        time.sleep(1.5)
        done.write_text("clean-up finished")
run_cli(app, "aesipe-test")
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_second_signal_during_the_clean_up_is_ignored(tmp_path, signum):
    ready, done = tmp_path / "ready", tmp_path / "done"
    process = _start(_SLOW_CLEANUP, str(ready), str(done))
    _when_ready(process, ready)
    process.send_signal(signum)
    _when_ready(process, Path(str(ready) + ".cleaning"))
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGHUP)
    _ends_in_one_line(process, "aesipe-test", signum)
    assert done.read_text() == "clean-up finished"
