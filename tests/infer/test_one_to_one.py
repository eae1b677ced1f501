"""Every input has its own outputs (issue: trust by construction): whatever the names in a folder, each image
gets a mask, overlay, confidence map, CVAT entry, COCO image and review row of its own, the files and formats
can carry the names, and a re-run keeps every mask. One property, tried on name sets made to collide."""
from __future__ import annotations

import csv
import json
import random
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aesipe.infer.cli import app
from aesipe.infer.layout import LONGEST_SUFFIX, NAME_MAX, assign_names
from aesipe.utils.labelpng import load_label_png

runner = CliRunner()
smooth_rgb = __import__("sys").modules["aesipe_tests_tiny_models"].smooth_rgb  # loaded by conftest.py
NFD_E = unicodedata.normalize("NFD", "é")

NAME_SETS = {
    "suffixes": ["a.jpg", "a.png", "a.jpg.png"],
    "case": ["Cat.jpg", "cat.JPG", "CAT.png"],
    "stem-equals-path": ["x.png", "x.png.jpg", "x.jpg"],
    "long": ["p" * 240 + ".jpg", "p" * 240 + ".png", "q" * 251 + ".jpg"],
    "control": ["new\nline.jpg", "tab\there.png", "plain.jpg"],
    "formula": ["=1+1.jpg", "+cmd.png", "-2.jpg", "@sum.png"],
    "unicode": ["caf" + "é" + ".jpg", "caf" + NFD_E + ".png"],
    "nested": ["a/b.jpg", "a/b.png", "a.b.jpg", "a/b/c.jpg"],
}


def _write(root: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb = smooth_rgb(24 + 8 * (i % 2), 32, seed=i)  # two sizes: batching mixes the names
        Image.fromarray(rgb).save(path, format="PNG" if name.lower().endswith(".png") else "JPEG")


def _label(*args):
    return runner.invoke(app, [str(a) for a in args])


def _hostile_names(seed: int, count: int = 12) -> list[str]:
    """Names built to collide: shared stems, suffix games, case, long parts, control characters."""
    rng = random.Random(seed)
    parts = ["a", "A", "a.jpg", "b", "x" * rng.randint(200, 250), "n\nl", "=f", "s p", "ü", "u" + "\u0308"]
    names = set()
    while len(names) < count:
        folder = rng.choice(["", "d/", "D/", "d/e/"])
        names.add(folder + rng.choice(parts) + rng.choice([".jpg", ".png", ".JPG", ".jpeg"]))
    return sorted(names)


@pytest.mark.parametrize("names", [*NAME_SETS.values(), *(_hostile_names(seed) for seed in range(3))],
                         ids=[*NAME_SETS, *(f"random{seed}" for seed in range(3))])
def test_the_naming_is_one_to_one_and_carriable(names):
    assigned = assign_names(names)
    folded = {unicodedata.normalize("NFC", n).casefold() for n in assigned.values()}
    assert len(folded) == len(names)  # distinct even on a case-insensitive, normalising filesystem
    for name in assigned.values():
        for part in name.split("/"):
            assert part not in ("", ".", "..") and not any(ord(c) < 32 for c in part)
            assert len((part + LONGEST_SUFFIX).encode()) <= NAME_MAX


@pytest.mark.parametrize("kind", ["suffixes", "case", "long", "control", "formula", "unicode", "nested"])
def test_every_image_gets_outputs_of_its_own(seg_onnx, tmp_path, kind):
    names = NAME_SETS[kind]
    images, out = tmp_path / "images", tmp_path / "out"
    try:
        _write(images, names)
    except OSError as exc:  # this filesystem cannot hold the set itself (e.g. case-insensitive)
        pytest.skip(f"the test folder cannot hold these names: {exc}")
    found = sorted(p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file())
    result = _label(seg_onnx, images, out, "--overlay", "--confidence", "--format", "png,coco,cvat", "--sheet")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())["images"]
    assert sorted(report) == found and all(r["status"] == "ok" for r in report.values())
    masks = {r["mask"] for r in report.values()}
    assert len(masks) == len(found) and len(list((out / "masks").rglob("*.png"))) == len(found)
    for folder, suffix in (("overlays", ".jpg"), ("confidence", ".png"), ("SegmentationClass", ".png")):
        assert len(list((out / folder).rglob("*" + suffix))) == len(found), folder
    for rel, record in report.items():  # each mask is its own image's
        height, width = np.asarray(Image.open(images / rel)).shape[:2]
        assert load_label_png(out / record["mask"]).shape == (height, width)
    coco = json.loads((out / "annotations.json").read_text())
    assert sorted(image["file_name"] for image in coco["images"]) == found
    cvat = (out / "ImageSets" / "Segmentation" / "default.txt").read_text().split("\n")[:-1]
    assert len(cvat) == len(set(cvat)) == len(found)
    with open(out / "review.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(found) and not any(r["image"].startswith(("=", "+", "-", "@")) for r in rows)
    assert sorted(r["image"].lstrip("'") for r in rows) == found
    again = _label(seg_onnx, images, out, "--overlay", "--confidence", "--format", "png,coco,cvat", "--sheet")
    assert again.exit_code == 0 and f"{len(found)} masks still valid, 0 to label" in again.output
