"""OUTPUT belongs to one run, and only aesipe's files in it are aesipe's (issue: trust by construction): a second
run on a locked OUTPUT is refused naming the first, and a run's clean-up removes aesipe's own temporary files
only, never a user's file, never through a symbolic link."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from aesipe.infer.cli import app
from aesipe.infer.layout import OutputLock
from aesipe.utils.atomic import TEMPORARY_PREFIX, atomic_write_text, remove_temporaries

runner = CliRunner()


def _label(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_a_second_run_on_a_locked_output_is_refused_naming_the_first(seg_onnx, photo_folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(  # another process holds OUTPUT, as a first run would
        [sys.executable, "-c", "import sys, time; from aesipe.infer.layout import OutputLock\n"
                               f"with OutputLock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (out / "masks").mkdir()
        (out / "masks" / f"{TEMPORARY_PREFIX}first-run-writing.tmp").write_text("the first run's half-written mask")
        result = _label(seg_onnx, photo_folder, out)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert "being written by another aesipe-label run" in lines[0] and f"pid {holder.pid}" in lines[0]
        assert (out / "masks" / f"{TEMPORARY_PREFIX}first-run-writing.tmp").exists()  # not taken from under it
        assert not list((out / "masks").glob("*.png"))
    finally:
        holder.kill()
        holder.wait()
    assert _label(seg_onnx, photo_folder, out).exit_code == 0  # a dead holder's lock is gone with it


def test_the_lock_is_released_after_a_run_and_after_a_failure(seg_onnx, photo_folder, tmp_path):
    out = tmp_path / "out"
    assert _label(seg_onnx, photo_folder, out).exit_code == 0
    with OutputLock(out):  # free again
        pass
    (photo_folder / "broken.png").write_bytes(b"no png")
    assert _label(seg_onnx, photo_folder, out).exit_code == 1
    with OutputLock(out):
        pass
    assert not (out / ".aesipe-lock.json").exists()


@pytest.mark.parametrize("user_file", [".notes.tmp", "masks/.draft.tmp", "overlays/.x.png.abc.tmp", "masks/notes.txt",
                                       "sheet/.keep", ".aesipe-settings.json"])
def test_a_users_files_in_output_are_never_removed(seg_onnx, photo_folder, tmp_path, user_file):
    out = tmp_path / "out"
    (out / user_file).parent.mkdir(parents=True, exist_ok=True)
    (out / user_file).write_text("mine")
    (out / "masks").mkdir(exist_ok=True)
    (out / "masks" / f"{TEMPORARY_PREFIX}killed.tmp").write_text("a killed run's")
    result = _label(seg_onnx, photo_folder, out, "--overlay")
    assert result.exit_code == 0, result.output
    assert (out / user_file).read_text() == "mine"
    assert not (out / "masks" / f"{TEMPORARY_PREFIX}killed.tmp").exists()


def test_a_symlinked_output_folder_is_not_cleaned_through_the_link(seg_onnx, photo_folder, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".cache.tmp").write_text("someone else's")
    (elsewhere / f"{TEMPORARY_PREFIX}not-ours-to-judge.tmp").write_text("behind a link")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sheet").symlink_to(elsewhere, target_is_directory=True)
    assert _label(seg_onnx, photo_folder, out).exit_code == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == sorted([".cache.tmp", f"{TEMPORARY_PREFIX}not-ours-to-judge.tmp"])


def test_remove_temporaries_takes_only_aesipes_names(tmp_path):
    atomic_write_text(tmp_path / "kept.txt", "x")
    (tmp_path / ".user.tmp").write_text("u")
    (tmp_path / f"{TEMPORARY_PREFIX}a.tmp").write_text("t")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f"{TEMPORARY_PREFIX}b.tmp").write_text("t")
    assert remove_temporaries(tmp_path) == 1 and (tmp_path / "sub" / f"{TEMPORARY_PREFIX}b.tmp").exists()
    assert remove_temporaries(tmp_path, recursive=True) == 1
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [".user.tmp", "kept.txt"]


def test_a_long_target_name_still_has_room_for_its_temporary_file(tmp_path):
    target = tmp_path / ("n" * 250 + ".png")
    atomic_write_text(target, "fits")
    assert target.read_text() == "fits" and os.listdir(tmp_path) == [target.name]


def test_two_runs_started_together_one_labels_one_is_refused(seg_onnx, photo_folder, tmp_path):
    out = tmp_path / "out"
    code = (f"import sys\nfrom aesipe.infer.cli import main\nsys.argv = ['aesipe-label', {str(seg_onnx)!r}, "
            f"{str(photo_folder)!r}, {str(out)!r}, '--workers', '1']\nmain()\n")
    runs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results  # both finish in turn, or the second is refused: never a mix
    if codes == [0, 2]:
        refused = next(err for code, err in results if code == 2)
        assert "being written by another aesipe-label run" in refused and "Traceback" not in refused
    assert len(list((out / "masks").rglob("*.png"))) == 5
