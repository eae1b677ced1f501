"""What a reviewer looks at: overlays with a legend, and the HTML contact sheet (checked headless: every file
the page references exists; rendered by Chromium when it is installed)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aesipe.infer.cli import app

colour = sys.modules["aesipe_tests_colour_model"]  # loaded by conftest.py
runner = CliRunner()
VOC = {1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0)}  # the tiny run's palette (VOC): cat, dog, car


def _label(*args):
    return runner.invoke(app, [str(a) for a in args])


class _Page(HTMLParser):
    """The links, images and cards of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.cards: list[str] = []
        self.text: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.refs += [attrs[key] for key in ("src", "href") if key in attrs]
        self._in_title = tag == "h2"

    def handle_data(self, data):
        if self._in_title:
            self.cards.append(data)
            self._in_title = False
        self.text.append(data)


def _page(out: Path) -> _Page:
    page = _Page()
    page.feed((out / "sheet.html").read_text(encoding="utf-8"))
    return page


def test_sheet_references_only_files_that_exist(colour_onnx, scenes, tmp_path):
    (scenes / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    result = _label(colour_onnx, scenes, out, "--sheet", "--overlay", "--confidence")
    assert result.exit_code == 1 and "sheet.html" in result.output, result.output
    page = _page(out)
    assert page.refs and all((out / unquote(ref)).is_file() for ref in page.refs), page.refs
    assert sum(ref.startswith("sheet/") for ref in page.refs) == 4 * 3  # image, overlay, confidence thumbnails
    assert any(ref.endswith("scenes/street/two.jpg") for ref in page.refs)  # the thumbnail opens the photo
    report = json.loads((out / "report.json").read_text())["images"]
    ok = [rel for rel, r in report.items() if r["status"] == "ok"]
    by_confidence = sorted(ok, key=lambda rel: report[rel]["mean_confidence"])
    assert page.cards[:4] == by_confidence and page.cards[0] == "purple.png"
    text = " ".join(page.text)
    for rel in ok:  # each card shows its class fractions, as the report has them
        for name, fraction in report[rel]["classes"].items():
            assert f"{name} {100 * fraction:.1f}%" in text
    assert "1 failed" in text and "broken.png" in text
    thumbnail = Image.open(out / "sheet" / "street" / "one.overlay.jpg")
    assert max(thumbnail.size) <= 240


def test_sheet_without_confidence_is_sorted_by_name_and_kept_thumbnails_stay(seg_onnx, photo_folder, tmp_path):
    out = tmp_path / "out"
    assert _label(seg_onnx, photo_folder, out, "--sheet").exit_code == 0
    page = _page(out)
    assert page.cards == ["a.jpg", "b.png", "sub/c.JPG", "sub/d.webp", "sub/deeper/e.bmp"]
    assert all((out / unquote(ref)).is_file() for ref in page.refs) and not any("confidence" in r for r in page.refs)
    before = (out / "sheet" / "a.jpg").stat().st_mtime_ns
    assert _label(seg_onnx, photo_folder, out, "--sheet").exit_code == 0  # masks kept: thumbnails too
    assert (out / "sheet" / "a.jpg").stat().st_mtime_ns == before


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (the page's links are checked above)")
def test_sheet_renders_in_headless_chromium(colour_onnx, scenes, tmp_path):
    out = tmp_path / "out"
    assert _label(colour_onnx, scenes, out, "--sheet", "--overlay", "--confidence").exit_code == 0
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
                    "--window-size=900,700", f"--screenshot={shot}", (out / "sheet.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (700, 900)
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    assert red.sum() > 100  # the thumbnails loaded: the red "cat" squares of the scenes are on the page


def test_overlays_carry_a_legend_of_the_present_classes(colour_onnx, scenes, tmp_path):
    out = tmp_path / "out"
    assert _label(colour_onnx, scenes, out, "--overlay").exit_code == 0
    overlay = np.asarray(Image.open(out / "overlays" / "street" / "one.jpg").convert("RGB")).astype(int)
    assert overlay.shape[1] == 240 and overlay.shape[0] > 160  # the image, then the legend strip below it
    strip = overlay[160:]

    def shows(rgb) -> bool:
        return bool((np.abs(strip - np.array(rgb)).max(axis=2) < 40).sum() > 20)

    assert shows(VOC[1]) and shows(VOC[2]) and not shows(VOC[3])  # cat and dog in this scene; no car
    plain = Image.open(out / "overlays" / "plain.jpg")
    assert plain.size[0] == 96 and plain.size[1] > 96


def test_overlays_of_tiled_images_stay_preview_sized(colour_onnx, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    Image.fromarray(colour.scene(600, 900, [(1, 100, 100, 40)])).save(folder / "wide.png")
    out = tmp_path / "out"
    assert _label(colour_onnx, folder, out, "--tile", "256", "--overlay", "--max-side", "300").exit_code == 0
    assert Image.open(out / "masks" / "wide.png").size == (900, 600)
    assert Image.open(out / "overlays" / "wide.jpg").size[0] == 300
