"""aesipe-label's second runs and ordinary mistakes: never a stale or lost mask, one line and the right exit
code for every mistake, files readable by others."""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aesipe.infer.cli import app
from aesipe.utils.labelpng import load_label_png

runner = CliRunner()
BIN = Path(sys.executable).parent


def _label(*args):
    return runner.invoke(app, [str(a) for a in args])


def _masks(out: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(out / "masks").as_posix(): load_label_png(p) for p in sorted((out / "masks").rglob("*.png"))}


def _mtimes(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in (out / "masks").rglob("*.png")}


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


# ---- resume: what a re-run keeps and what it redoes, checked on the masks themselves ----------------------
def test_a_rerun_with_the_same_everything_keeps_every_mask(seg_onnx, photo_folder, tmp_path):
    assert _label(seg_onnx, photo_folder, tmp_path / "out").exit_code == 0
    before = _mtimes(tmp_path / "out")
    again = _label(seg_onnx, photo_folder, tmp_path / "out")
    assert again.exit_code == 0 and "5 masks still valid, 0 to label" in again.output
    assert _mtimes(tmp_path / "out") == before


@pytest.mark.parametrize("change, reason", [
    (["--scales", "1.0,0.75"], "5 made with other scales"),
    (["--flip"], "5 made with other flip"),
    (["--max-side", "32"], "5 made with other max_side"),
])
def test_other_settings_rewrite_the_masks_and_say_why(seg_onnx, photo_folder, tmp_path, change, reason):
    out = tmp_path / "out"
    assert _label(seg_onnx, photo_folder, out).exit_code == 0
    before = _mtimes(out)
    result = _label(seg_onnx, photo_folder, out, *change)
    assert result.exit_code == 0 and reason in result.output, result.output
    after = _mtimes(out)
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)
    assert _report(out)["summary"]["resumed"] == 0


def test_another_model_rewrites_the_masks(seg_onnx, seg_torchscript, photo_folder, tmp_path):
    out = tmp_path / "out"
    assert _label(seg_onnx, photo_folder, out).exit_code == 0
    result = _label(seg_torchscript, photo_folder, out)
    assert result.exit_code == 0 and "5 made with another model" in result.output
    assert _report(out)["summary"]["model"] == str(seg_torchscript)


def test_other_tags_redo_only_that_image(pl_onnx, photo_folder, tmp_path):
    csv = tmp_path / "tags.csv"
    rows = "a,cat\nb.png,dog car\nsub/c,\nsub/d.webp,car\nsub/deeper/e,dog\n"
    csv.write_text("image,labels\n" + rows)
    out = tmp_path / "out"
    assert _label(pl_onnx, photo_folder, out, "--tags", csv).exit_code == 0
    before = _mtimes(out)
    csv.write_text("image,labels\n" + rows.replace("a,cat", "a,dog"))
    result = _label(pl_onnx, photo_folder, out, "--tags", csv)
    assert result.exit_code == 0 and "1 made with other tags" in result.output
    after = _mtimes(out)
    assert [k for k in after if after[k] != before[k]] == ["masks/a.png"]
    assert set(np.unique(load_label_png(out / "masks" / "a.png"))) <= {0, 2}  # dog, never cat any more


def test_a_changed_image_is_relabelled(seg_onnx, photo_folder, tmp_path):
    out = tmp_path / "out"
    assert _label(seg_onnx, photo_folder, out).exit_code == 0
    before = _mtimes(out)
    shutil.copy(photo_folder / "b.png", photo_folder / "a.jpg.tmp")  # new content under the old name
    from PIL import Image

    Image.open(photo_folder / "a.jpg.tmp").convert("RGB").save(photo_folder / "a.jpg")
    result = _label(seg_onnx, photo_folder, out)
    assert "1 the image changed" in result.output
    after = _mtimes(out)
    assert [k for k in after if after[k] != before[k]] == ["masks/a.png"]


def test_masks_of_unknown_origin_are_redone(seg_onnx, photo_folder, tmp_path):
    out = tmp_path / "out"
    assert _label(seg_onnx, photo_folder, out).exit_code == 0
    from aesipe.utils.labelpng import save_label_png, voc_palette

    save_label_png(out / "masks" / "a.png", np.zeros((40, 56), np.uint8), voc_palette())  # no record inside
    result = _label(seg_onnx, photo_folder, out)
    assert "1 made by an unknown run" in result.output


def test_output_inside_input_never_labels_its_own_masks(seg_onnx, photo_folder):
    out = photo_folder / "labelled"
    for _ in range(3):
        result = _label(seg_onnx, photo_folder, out, "--overlay")
        assert result.exit_code == 0, result.output
        assert len(_masks(out)) == 5 and len(_report(out)["images"]) == 5


def test_overlay_on_a_rerun_writes_the_missing_overlays(seg_onnx, photo_folder, tmp_path):
    out = tmp_path / "out"
    assert _label(seg_onnx, photo_folder, out).exit_code == 0
    assert not (out / "overlays").exists()
    result = _label(seg_onnx, photo_folder, out, "--overlay")
    assert result.exit_code == 0 and "5 masks still valid" in result.output
    assert len(list((out / "overlays").rglob("*.jpg"))) == 5


def test_files_get_the_permissions_of_the_umask(seg_onnx, photo_folder, tmp_path):
    code = (
        "import os; os.umask(0o022)\n"
        "from aesipe.infer import label_folder\n"
        f"label_folder({str(seg_onnx)!r}, {str(photo_folder)!r}, {str(tmp_path / 'out')!r}, overlay=True,"
        " progress=False)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}


# ---- mistakes: one line, the right exit code, nothing processed -------------------------------------------
def _cases(m, i, o, tmp):
    (tmp / "afile").write_text("x")
    (tmp / "empty").mkdir(exist_ok=True)
    (tmp / "empty" / "notes.txt").write_text("no images here")
    return [
        ([m, i, tmp / "afile"], "is a file"),
        ([m, i, tmp / "afile" / "sub"], "cannot write into OUTPUT"),
        ([m, tmp / "empty", o], "no images in"),
        ([tmp, i, o], "is a folder"),
        ([m, i, o, "--tags", tmp], "is a folder"),
        ([m, i, o, "--device", "cuda:x"], "--device must be one of"),
        ([m, "@" + str(tmp / "nolist.txt"), o], "list file not found"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_mistakes_end_in_one_line_before_any_work(seg_onnx, photo_folder, tmp_path, case):
    args, message = _cases(seg_onnx, photo_folder, tmp_path / "out", tmp_path)[case]
    result = _label(*args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("aesipe-label: error:") and message in lines[0], lines
    assert not (tmp_path / "out" / "masks").exists()


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "abc"], "Invalid value for '--batch-size'"),
    (["--no-such-option"], "No such option: --no-such-option"),
    ([], "Missing argument"),
])
def test_typer_usage_errors_are_one_line_too(seg_onnx, photo_folder, tmp_path, args, message):
    positional = [] if not args else [str(seg_onnx), str(photo_folder), str(tmp_path / "out")]
    result = subprocess.run([str(BIN / "aesipe-label"), *positional, *args], capture_output=True, text=True)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], lines


def test_help_shows_brackets_literally():
    result = subprocess.run([str(BIN / "aesipe-label"), "--help"], capture_output=True, text=True)
    assert "pip install 'aesipe[crf]'" in " ".join(result.stdout.split())


def test_failures_are_listed_on_the_console(seg_onnx, photo_folder, tmp_path):
    for index in range(7):
        (photo_folder / f"broken{index}.png").write_bytes(b"not a png")
    result = _label(seg_onnx, photo_folder, tmp_path / "out")
    assert result.exit_code == 1
    assert result.output.count("failed: broken") == 5 and "... and 2 more failures" in result.output


def test_ctrl_c_writes_the_report_and_exits_130(seg_onnx, photo_folder, tmp_path):
    # The third mask's write is interrupted as a Ctrl-C would be; the entry point must say one line, exit 130
    # and leave a report of the masks already written.
    code = (
        "import sys\n"
        "from aesipe.infer import steps as job\n"
        "from aesipe.infer.cli import main\n"
        "real, calls = job.save_label_png, []\n"
        "def save(*a, **k):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3: raise KeyboardInterrupt\n"
        "    real(*a, **k)\n"
        "job.save_label_png = save\n"
        f"sys.argv = ['aesipe-label', {str(seg_onnx)!r}, {str(photo_folder)!r}, {str(tmp_path / 'out')!r},"
        " '--workers', '1', '--batch-size', '1']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 130, result.stderr
    assert "interrupted" in result.stderr.splitlines()[-1] and "Traceback" not in result.stderr
    report = _report(tmp_path / "out")
    # Writes already queued when the Ctrl-C came are finished (nothing is left half-done): 2 to 4 masks.
    assert report["summary"]["interrupted"] and 2 <= report["summary"]["ok"] < 5
    assert report["summary"]["ok"] == len(_masks(tmp_path / "out"))


_KILL_BETWEEN_WRITES = """
real, calls = job.save_label_png, []
def save(*a, **k):
    calls.append(1)
    if len(calls) == 4: os.kill(os.getpid(), signal.SIGKILL)
    real(*a, **k)
job.save_label_png = save
"""
_KILL_DURING_A_WRITE = """
import contextlib
from aesipe.utils import atomic
real_open, calls = atomic.atomic_open, []
@contextlib.contextmanager
def dying_open(path, suffix=".tmp"):
    with real_open(path, suffix) as handle:
        if str(path).endswith(".png"):
            calls.append(1)
            if len(calls) == 4:
                handle.write(b"half a png")
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        yield handle
atomic.atomic_open = dying_open
"""


@pytest.mark.parametrize("patch", [_KILL_BETWEEN_WRITES, _KILL_DURING_A_WRITE], ids=["between-writes", "during-a-write"])
def test_sigkill_mid_folder_loses_nothing(seg_onnx, photo_folder, tmp_path, patch):
    clean = tmp_path / "clean"
    assert _label(seg_onnx, photo_folder, clean).exit_code == 0
    out = tmp_path / "out"
    code = (
        "import os, signal\n"
        "from aesipe.infer import folder\nfrom aesipe.infer import steps as job\n" + patch +
        f"folder.label_folder({str(seg_onnx)!r}, {str(photo_folder)!r}, {str(out)!r}, workers=1, batch_size=1,"
        " progress=False)\n"
    )
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert len(_masks(out)) == 3  # finished masks only: a cut-off write never has the mask's name
    result = _label(seg_onnx, photo_folder, out)
    assert result.exit_code == 0 and "3 masks still valid, 2 to label" in result.output
    masks, expected = _masks(out), _masks(clean)
    assert masks.keys() == expected.keys() and all((masks[k] == expected[k]).all() for k in masks)
    # the cut-off temporary file is gone too (the lock file stays: a lock is only safe on a file nobody removes)
    assert not [p for p in out.rglob(".*") if p.is_file() and p.name != ".aesipe-lock"]


def test_the_plain_ort_example_fails_cleanly(pl_onnx, photo_folder, tmp_path):
    client = Path(__file__).resolve().parents[2] / "examples" / "ort_client.py"
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    for args, message in [
        ([pl_onnx, photo_folder / "a.jpg", tmp_path / "x.png", "--tags", "kat"], "unknown class 'kat'"),
        ([pl_onnx, photo_folder, tmp_path / "x.png", "--tags", "cat"], "is a folder"),
        ([pl_onnx, tmp_path / "corrupt.jpg", tmp_path / "x.png", "--tags", "cat"], "cannot read image"),
        ([pl_onnx, photo_folder / "a.jpg", tmp_path / "x.png"], "give the image's classes with --tags"),
    ]:
        run = subprocess.run([sys.executable, "-I", str(client), *map(str, args)], capture_output=True, text=True)
        assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
        assert run.stderr.strip().startswith("ort_client.py: error:") and message in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1
    assert os.path.exists(client)


def test_a_slow_image_does_not_hold_back_the_others(seg_onnx, photo_folder, tmp_path, monkeypatch):
    # a.jpg takes "forever" to read (until every other mask is on disk): with decoding taken in the order
    # it finishes, the others are labelled and written meanwhile instead of queueing behind it.
    import threading

    from aesipe.infer import folder
    from aesipe.infer import steps as job

    out = tmp_path / "out"
    others_written = threading.Event()
    real_read, real_save, saved = job.read_image, job.save_label_png, []

    def slow_read(path, max_side):
        if path.name == "a.jpg":
            assert others_written.wait(timeout=60), "the other images waited for the slow one"
        return real_read(path, max_side)

    def counting_save(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        saved.append(path.name)
        if len(saved) == 4:
            others_written.set()

    monkeypatch.setattr(job, "read_image", slow_read)
    monkeypatch.setattr(job, "save_label_png", counting_save)
    report = folder.label_folder(seg_onnx, photo_folder, out, workers=2, batch_size=1, progress=False)
    assert report.ok == 5 and saved[-1] == "a.png"
