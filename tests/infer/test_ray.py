"""``--engine ray``: a local Ray cluster (2 CPUs, 2 actors) gives the local engine's masks, records and exit codes
bit for bit; masks are valid for the other engine's re-runs; a bad image fails alone; a dying actor is retried
without losing or redoing the masks it finished. The tests skip without ``pip install 'aesipe[ray]'``, except
the one that checks what ``--engine ray`` says without Ray."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from typer.testing import CliRunner

from aesipe.infer import fingerprint, label_folder
from aesipe.infer.cli import app
from aesipe.utils.labelpng import load_label_png

runner = CliRunner()


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _outputs(out: Path) -> dict[str, tuple]:
    """Every per-image file: its pixels and, for masks, the record of what made it."""
    files = {}
    for path in sorted(p for p in out.rglob("*.png") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        files[rel] = (np.asarray(load_label_png(path)) if rel.startswith("masks/") else path.read_bytes(),
                      fingerprint.read(path) if rel.startswith("masks/") else None)
    return files


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k][0], b[k][0]) and a[k][1] == b[k][1] for k in a)


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _mtimes(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in (out / "masks").rglob("*.png")}


def _ray(model, images, out, **options):
    return label_folder(model, images, out, engine="ray", actors=2, progress=False, log=lambda m: None, **options)


def _local(model, images, out, **options):
    return label_folder(model, images, out, progress=False, log=lambda m: None, **options)


@pytest.mark.slow
def test_ray_masks_and_records_are_the_local_engines_bit_for_bit(ray_session, seg_onnx, photo_folder, tmp_path):
    options = {"batch_size": 2, "overlay": True, "confidence": True}
    local, ray = _local(seg_onnx, photo_folder, tmp_path / "local", **options), _ray(seg_onnx, photo_folder, tmp_path / "ray", **options)
    assert local.ok == ray.ok == 5 and ray.failed == 0 and ray.exit_code == 0
    assert _same(_outputs(tmp_path / "local"), _outputs(tmp_path / "ray"))
    assert len(list((tmp_path / "ray" / "overlays").rglob("*.jpg"))) == 5
    assert _report(tmp_path / "local")["images"] == _report(tmp_path / "ray")["images"]
    summary = _report(tmp_path / "ray")["summary"]
    assert summary["engine"] == "ray" and summary["ray"]["actors"] == 2 and summary["ray"]["threads"] == 1
    assert summary["providers"] == ["CPUExecutionProvider"] and not summary["interrupted"]
    assert (tmp_path / "ray" / "review.csv").read_text() == (tmp_path / "local" / "review.csv").read_text()  # finalize
    # no journal or temporary file left (the lock file stays: a lock is only safe on a file nobody removes)
    assert not [p for p in (tmp_path / "ray").rglob(".*") if p.is_file() and p.name != ".aesipe-lock"]


@pytest.mark.slow
def test_a_pseudo_labeller_with_tags_and_a_bad_image_match_too(ray_session, pl_onnx, photo_folder, tmp_path, monkeypatch):
    (photo_folder / "broken.png").write_bytes(b"not a png")
    (photo_folder / "untagged.png").write_bytes((photo_folder / "b.png").read_bytes())
    (tmp_path / "tags.csv").write_text("image,labels\na,cat\nb.png,dog car\nsub/c,\nsub/d.webp,car\nsub/deeper/e,dog\nbroken,cat\n")
    monkeypatch.chdir(tmp_path)  # a relative --tags path, as a user types it: the actors read it all the same
    local, ray = (_local(pl_onnx, photo_folder, tmp_path / "local", tags_csv=Path("tags.csv")),
                  _ray(pl_onnx, photo_folder, tmp_path / "ray", tags_csv=Path("tags.csv")))
    assert ray.ok == local.ok == 5 and ray.failed == local.failed == 2 and ray.exit_code == 1
    records = _report(tmp_path / "ray")["images"]
    assert records == _report(tmp_path / "local")["images"]
    assert records["untagged.png"]["reason"] == "no row for this image in tags.csv"
    assert _same(_outputs(tmp_path / "local"), _outputs(tmp_path / "ray"))


@pytest.mark.slow
@pytest.mark.parametrize("first, second", [(_ray, _local), (_local, _ray)], ids=["ray-then-local", "local-then-ray"])
def test_masks_are_valid_for_the_other_engine(ray_session, seg_onnx, photo_folder, tmp_path, first, second):
    out = tmp_path / "out"
    first(seg_onnx, photo_folder, out)
    before, records = _mtimes(out), _report(out)["images"]
    again = second(seg_onnx, photo_folder, out)
    assert again.summary["resumed"] == 5 and again.summary["processed_this_run"] == 0
    assert _mtimes(out) == before
    assert {k: {f: v for f, v in r.items() if f != "resumed"} for k, r in _report(out)["images"].items()} == records
    changed = second(seg_onnx, photo_folder, out, flip=True)  # other settings: every mask redone by that engine
    assert changed.summary["processed_this_run"] == 5 and all(_mtimes(out)[k] != before[k] for k in before)


def _dying_actor(flag: Path, log: Path, times: int):
    """A LabelActor whose process exits while writing sub/c.JPG, the first ``times`` times (counted in
    ``flag``); ``log`` gets a line per mask really written. Defined here, so Ray pickles it by value."""
    from aesipe.infer.ray_workers import LabelActor

    class Dying(LabelActor):
        def write(self, task, rgb, content, item, outputs):
            if PurePosixPath(task.rel).name == "c.JPG":
                deaths = int(flag.read_text()) if flag.exists() else 0
                if deaths < times:
                    flag.write_text(str(deaths + 1))
                    os._exit(1)
            with open(log, "a") as handle:
                handle.write(f"{task.rel}\n")
            return LabelActor.write(self, task, rgb, content, item, outputs)

    return Dying


@pytest.mark.slow
def test_a_dying_actor_is_retried_without_losing_or_redoing_masks(ray_session, seg_onnx, photo_folder, tmp_path,
                                                                 monkeypatch):
    _local(seg_onnx, photo_folder, tmp_path / "local")
    flag, log = tmp_path / "deaths", tmp_path / "written.log"
    report = _ray_with(monkeypatch, seg_onnx, photo_folder, tmp_path / "ray", 4, actor_cls=_dying_actor(flag, log, times=1))
    assert flag.read_text() == "1" and report.ok == 5 and report.failed == 0
    assert sorted(log.read_text().split()) == ["a.jpg", "b.png", "sub/c.JPG", "sub/d.webp", "sub/deeper/e.bmp"]
    assert _same(_outputs(tmp_path / "local"), _outputs(tmp_path / "ray"))
    assert _report(tmp_path / "local")["images"] == _report(tmp_path / "ray")["images"]


@pytest.mark.slow
def test_an_image_that_always_kills_its_actor_fails_alone(ray_session, seg_onnx, photo_folder, tmp_path, monkeypatch):
    from aesipe.infer.ray_workers import TRIES_PER_IMAGE

    report = _ray_with(monkeypatch, seg_onnx, photo_folder, tmp_path / "ray", 4,
                       actor_cls=_dying_actor(tmp_path / "deaths", tmp_path / "log", times=99))
    assert report.ok == 4 and report.failed == 1 and report.exit_code == 1
    reason = report.images["sub/c.JPG"]["reason"]
    assert reason == f"the labelling process died on it {TRIES_PER_IMAGE} times"
    again = _local(seg_onnx, photo_folder, tmp_path / "ray")  # the others are kept; the re-run does only that one
    assert again.summary["resumed"] == 4 and again.ok == 5


def _dying_decoder(flag: Path, times: int):
    """A decode task whose process exits while reading sub/c.JPG, the first ``times`` times (counted in ``flag``).
    It patches the decode step in its worker process during the call: the journal the real task keeps counts."""
    from aesipe.infer import ray_workers

    def dying_decode(row, state):
        original = ray_workers.decode

        def decode(task, job):
            deaths = int(flag.read_text()) if flag.exists() else 0
            if PurePosixPath(task.rel).name == "c.JPG" and deaths < times:
                flag.write_text(str(deaths + 1))
                os._exit(1)
            return original(task, job)

        ray_workers.decode = decode  # for this call only: the worker process decodes other tests' images later
        try:
            return ray_workers.decode_task(row, state)
        finally:
            ray_workers.decode = original

    return dying_decode


def _ray_with(monkeypatch, model, images, out, batch_size, decode_fn=None, actor_cls=None):
    """``--engine ray`` with a failing decode task or actor put in."""
    from aesipe.infer import ray_engine, ray_workers

    monkeypatch.setattr(ray_engine, "_workers", lambda: (decode_fn or ray_workers.decode_task,
                                                         actor_cls or ray_workers.LabelActor))
    return _ray(model, images, out, batch_size=batch_size)


@pytest.mark.slow
@pytest.mark.parametrize("times", [1, 99], ids=["once", "always"])
def test_an_image_that_kills_its_decoder_is_retried_then_fails_alone(ray_session, seg_onnx, photo_folder, tmp_path, times,
                                                                    monkeypatch):
    from aesipe.infer.ray_workers import TRIES_PER_IMAGE

    flag, out = tmp_path / "deaths", tmp_path / "ray"
    report = _ray_with(monkeypatch, seg_onnx, photo_folder, out, 2, decode_fn=_dying_decoder(flag, times))
    if times == 1:  # the retry decodes it: nothing lost
        assert flag.read_text() == "1" and report.ok == 5 and report.failed == 0 and report.exit_code == 0
        _local(seg_onnx, photo_folder, tmp_path / "local")
        assert _same(_outputs(tmp_path / "local"), _outputs(out))
    else:
        assert flag.read_text() == str(TRIES_PER_IMAGE)
        assert report.ok == 4 and report.failed == 1 and report.exit_code == 1
        assert report.images["sub/c.JPG"]["reason"] == f"the decoding process died on it {TRIES_PER_IMAGE} times"
    assert not [p for p in out.rglob(".*") if p.is_file() and p.name != ".aesipe-lock"]  # no journal left (but the lock)


def test_the_cli_engine_options(ray_session, seg_onnx, photo_folder, tmp_path):
    (photo_folder / "broken.png").write_bytes(b"not a png")
    result = runner.invoke(app, [str(a) for a in (seg_onnx, photo_folder, tmp_path / "out", "--engine", "ray", "--actors", "2")])
    assert result.exit_code == 1 and "failed: broken.png" in result.output, result.output
    assert "5 labelled, 1 failed" in result.output
    for args, message in [(["--engine", "spark"], "--engine must be local or ray"),
                          (["--actors", "2"], "--ray-address and --actors need --engine ray"),
                          (["--engine", "ray", "--actors", "0"], "--actors must be at least 1"),
                          (["--engine", "ray", "--actors", "3", "--device", "cuda"], "needs one GPU each")]:
        bad = runner.invoke(app, [str(a) for a in (seg_onnx, photo_folder, tmp_path / "bad", *args)])
        lines = [line for line in bad.output.splitlines() if line.strip()]
        assert bad.exit_code == 2 and lines[-1].startswith("aesipe-label: error:") and message in lines[-1], bad.output


def test_without_ray_the_engine_says_how_to_install_it(seg_onnx, photo_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
    result = runner.invoke(app, [str(a) for a in (seg_onnx, photo_folder, tmp_path / "out", "--engine", "ray")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and lines == ["aesipe-label: error: --engine ray needs Ray: pip install 'aesipe[ray]'"]
    assert not (tmp_path / "out").exists()
