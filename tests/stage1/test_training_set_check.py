"""A training set is checked before step 1: a truncated, empty or undecodable image stops the run with one line
naming it (and what to edit to leave it out) before any training, not when the sampler draws it; the check is
cached per file identity, so a re-run decodes only what changed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aesipe.data import imagecheck, open_dataset
from aesipe.data.imagecheck import CACHE_FILE, check_training_images, find_unreadable
from aesipe.train.cli import app
from aesipe.train.stages import stage1
from aesipe.utils.errors import UserError

from .conftest import tiny_overrides


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A private synthetic dataset (these tests damage its files): 6 train images, PNG."""
    from aesipe.data.synth import generate

    return generate(tmp_path / "data", num_train=6, num_val=2, size=48, seed=0, num_classes=3,
                    image_format="png", progress=False)


def _image(root: Path, index: int) -> Path:
    return root / "JPEGImages" / f"synth_{index:05d}.png"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture
def make_run_cfg():
    from aesipe.config import RunConfig, load_config

    return lambda run, root, **extra: load_config(RunConfig, None, [f"run_dir={run}", *tiny_overrides(root, **extra)])


def test_bad_images_stop_the_run_before_step_one_naming_them_and_the_fix(tmp_path, dataset, make_run_cfg):
    _truncate(_image(dataset, 1))
    _image(dataset, 4).write_bytes(b"")
    _image(dataset, 5).write_bytes(b"not an image at all")
    cfg = make_run_cfg(tmp_path / "run", dataset)
    with pytest.raises(UserError) as caught:
        stage1.train_stage1(cfg)
    message = str(caught.value)
    assert "3 of 6 images of split 'train' cannot be read, found before training" in message, message
    assert "synth_00001.png (truncated or corrupt" in message and "synth_00004.png (empty file)" in message
    assert "synth_00005.png (not an image" in message and "\n" not in message
    assert f"remove their ids from {dataset / 'ImageSets/Segmentation/train.txt'}" in message
    # Before any training: no log, no checkpoint (the sampler would have met them at steps 1-3).
    assert not (tmp_path / "run" / "stage1").exists()
    listing = (tmp_path / "run" / imagecheck.BAD_LIST_FILE).read_text().splitlines()
    assert len(listing) == 3 and all("\t" in line for line in listing)


def test_the_cli_says_it_in_one_line_and_a_fixed_set_trains(tmp_path, dataset):
    original = _image(dataset, 2).read_bytes()
    _truncate(_image(dataset, 2))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(run), *tiny_overrides(dataset)])
    lines = [line for line in result.output.splitlines() if line.strip() and "%|" not in line]
    assert result.exit_code == 2 and len(lines) == 1 and "synth_00002.png" in lines[0], result.output
    _image(dataset, 2).write_bytes(original)
    again = CliRunner().invoke(app, ["train", str(run), *tiny_overrides(dataset)])
    assert again.exit_code == 0, again.output
    assert (run / "stage1" / "final.pt").is_file()


def test_the_check_is_cached_per_file_identity(tmp_path, dataset, monkeypatch):
    calls: list[Path] = []
    real = imagecheck.verify_image
    monkeypatch.setattr(imagecheck, "verify_image", lambda path: (calls.append(path), real(path))[1])
    ds = open_dataset(_data_cfg(dataset), "train")
    check_training_images(ds, tmp_path, log=lambda _: None)
    assert len(calls) == 6 and (tmp_path / CACHE_FILE).is_file()
    calls.clear()
    check_training_images(ds, tmp_path, log=lambda _: None)
    assert calls == []  # nothing decoded again
    # Rewritten in place with the same bytes and mtime: the ctime still says it changed.
    path = _image(dataset, 3)
    stat = path.stat()
    path.write_bytes(path.read_bytes())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    check_training_images(ds, tmp_path, log=lambda _: None)
    assert calls == [path]
    # A file damaged after it was checked is checked again, and caught.
    calls.clear()
    _truncate(_image(dataset, 0))
    with pytest.raises(UserError, match="synth_00000.png"):
        check_training_images(ds, tmp_path, log=lambda _: None)
    assert calls == [_image(dataset, 0)]


def test_an_image_over_the_decode_bound_is_found_too(tmp_path, dataset):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "aesipe_tests_hostile_images", Path(__file__).parents[1] / "core" / "hostile_images.py")
    hostile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hostile)
    hostile.png_header(_image(dataset, 2), 30000, 30000)
    bad = find_unreadable({"a": _image(dataset, 2), "b": _image(dataset, 3)}, None, workers=2)
    assert [b.image_id for b in bad] == ["a"] and "MAX_DECODE_BYTES" in bad[0].reason


def test_a_labels_csv_dataset_names_the_csv(tmp_path, dataset):
    (dataset / "ImageSets" / "Segmentation" / "train.txt").unlink()
    _truncate(_image(dataset, 1))
    ds = open_dataset(_data_cfg(dataset), "train")
    with pytest.raises(UserError, match=r"remove their ids from the labels CSV .*labels_train\.csv"):
        check_training_images(ds, tmp_path, log=lambda _: None)


def _data_cfg(root: Path):
    from aesipe.config import DataConfig

    return DataConfig(root=str(root))
