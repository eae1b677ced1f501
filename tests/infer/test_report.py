"""report.json and its journal: records survive a killed run, a report is written once and read a line at a
time, earlier layouts still read, and a re-run of an unchanged folder reads no mask (folders of a million
images, issue: trust by construction; the timings are benchmarks/bench_scale.py's)."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from aesipe.infer import fingerprint
from aesipe.infer.cli import app
from aesipe.infer.report import JOURNAL_FILE, MASK_FILE, Report

runner = CliRunner()


def _record(i: int) -> dict:
    return {"status": "ok" if i % 3 else "failed", "mask": f"masks/{i}.png", "classes": {"cat": 0.5}}


def test_a_killed_runs_records_come_back_from_the_journal(tmp_path):
    report = Report(tmp_path / "report.json")
    for i in range(5):
        report.set(f"{i}.jpg", {**_record(i), MASK_FILE: [10, i]})
    report.flush()
    report.set("5.jpg", _record(5))  # set after the last flush: lost with the process, as a kill would lose it
    with open(tmp_path / JOURNAL_FILE, "a") as journal:
        journal.write('"cut.jpg"\t{"status": "o')  # a line cut off by the kill
    again = Report.load_previous(tmp_path / "report.json", {f"{i}.jpg" for i in range(6)} | {"cut.jpg"})
    assert sorted(again.images) == [f"{i}.jpg" for i in range(5)]
    assert again.images["4.jpg"] == _record(4) and again.mask_file("4.jpg") == [10, 4]
    assert (again.ok, again.failed) == (3, 2)


def test_the_report_is_written_once_a_line_an_image_and_read_back(tmp_path):
    report = Report(tmp_path / "report.json")
    names = ["a.jpg", 'we"ird\nname.png', "sub/b.png"]
    for i, name in enumerate(names):
        report.set(name, {**_record(i + 1), MASK_FILE: [i, i]})
    report.summary = {"seconds": 1.0}
    report.flush()
    report.write()
    assert not (tmp_path / JOURNAL_FILE).exists()
    data = json.loads((tmp_path / "report.json").read_text())  # plain JSON for any reader
    assert data["summary"]["images"] == 3 and data["images"][names[1]] == _record(2)
    lines = (tmp_path / "report.json").read_text().splitlines()
    assert sum(1 for line in lines if line.startswith('"a.jpg": ')) == 2  # its record and its mask file
    again = Report.load_previous(tmp_path / "report.json", set(names[:2]))
    assert sorted(again.images) == sorted(names[:2]) and again.mask_file(names[1]) == [1, 1]


def test_a_report_of_the_earlier_layout_is_read(tmp_path):
    earlier = {"summary": {"images": 2}, "images": {"a.jpg": _record(1), "b.jpg": _record(3)}}
    (tmp_path / "report.json").write_text(json.dumps(earlier, indent=1))
    again = Report.load_previous(tmp_path / "report.json", {"a.jpg", "b.jpg"})
    assert dict(again.images) == earlier["images"] and again.mask_file("a.jpg") is None


def test_an_unchanged_folder_is_re_run_without_reading_a_mask(seg_onnx, photo_folder, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert runner.invoke(app, [str(seg_onnx), str(photo_folder), str(out)]).exit_code == 0
    reads: list[Path] = []
    real = fingerprint.read
    monkeypatch.setattr(fingerprint, "read", lambda mask: reads.append(mask) or real(mask))
    result = runner.invoke(app, [str(seg_onnx), str(photo_folder), str(out)])
    assert result.exit_code == 0 and "5 masks still valid" in result.output and reads == []
    (out / "masks" / "a.png").write_bytes((out / "masks" / "b.png").read_bytes())  # a mask replaced by hand
    result = runner.invoke(app, [str(seg_onnx), str(photo_folder), str(out)])
    # only the changed mask is read (by the reviewed-mask check and by the plan: the same file)
    assert "4 masks still valid, 1 to label" in result.output and set(reads) == {out / "masks" / "a.png"}
