"""What a reviewer looks at: overlays with a legend, and the HTML contact sheet (checked headless: every file
the page references exists; rendered by Chromium when it is installed: the grid, the switches, the colours)."""
from __future__ import annotations

import html
import json
import re
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
    files = [ref for ref in page.refs if not ref.startswith("#")]  # "#failed": the link to the failures
    assert files and all((out / unquote(ref)).is_file() for ref in files), files
    assert sum(ref.startswith("sheet/") for ref in page.refs) == 4 * 3  # image, overlay, confidence thumbnails
    assert any(ref.endswith("scenes/street/two.jpg") for ref in page.refs)  # the thumbnail opens the photo
    report = json.loads((out / "report.json").read_text())["images"]
    ok = [rel for rel, r in report.items() if r["status"] == "ok"]
    by_confidence = sorted(ok, key=lambda rel: report[rel]["mean_confidence"])
    assert page.cards[:4] == by_confidence and page.cards[0] == "purple.png"
    text = " ".join(page.text)
    for rel in ok:  # each card shows its class fractions, as the report has them ("<0.1%" when tiny)
        for name, fraction in report[rel]["classes"].items():
            assert f"{name} {100 * fraction:.1f}%" in text or (fraction < 0.0005 and f"{name} <0.1%" in text)
    assert "1 failed" in text and "broken.png" in text
    thumbnail = Image.open(out / "sheet" / "street" / "one.overlay.jpg")
    assert max(thumbnail.size) <= 240


def test_sheet_without_confidence_is_sorted_by_name_and_kept_thumbnails_stay(seg_onnx, photo_folder, tmp_path):
    out = tmp_path / "out"
    assert _label(seg_onnx, photo_folder, out, "--sheet").exit_code == 0
    page = _page(out)
    assert page.cards == ["a.jpg", "b.png", "sub/c.JPG", "sub/d.webp", "sub/deeper/e.bmp"]
    assert all((out / unquote(ref)).is_file() for ref in page.refs) and not any("confidence" in r for r in page.refs)
    assert 'id="view-confidence"' not in (out / "sheet.html").read_text()  # no maps: no switch to them
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


def test_sheet_marks_cards_by_the_threshold_and_names_input_and_every_class(colour_onnx, scenes, tmp_path):
    from aesipe.infer.sheet import REVIEW_BELOW

    out = tmp_path / "out"
    assert _label(colour_onnx, scenes, out, "--sheet", "--confidence").exit_code == 0
    text = (out / "sheet.html").read_text(encoding="utf-8")
    report = json.loads((out / "report.json").read_text())["images"]
    for rel, record in report.items():  # each card's colour class follows the threshold
        mark = "review" if record["mean_confidence"] < REVIEW_BELOW else "confident"
        card = re.search(r'<article class="card ([^"]*)">(?:(?!</article>).)*title="' + re.escape(rel) + '"', text)
        assert card and mark in card.group(1).split(), (rel, record["mean_confidence"])
    assert f"from {html.escape(str(scenes))}," in text  # the input is named
    for index, name in enumerate(["background", "cat", "dog", "car"]):  # the legend/filter: background too
        assert re.search(rf'id="class-{index}"> <span class="sw" style="background:rgb\([0-9,]+\)"></span>{name}<', text)
    assert "white = confident" in text


def _probe(page: Path, width: int, height: int, tmp_path: Path) -> dict:
    """Open ``page`` in headless Chromium at ``width`` x ``height`` and measure it from inside the browser:
    the boxes of the visible cards and thumbnails, the badge colours, then the same after switching to the
    confidence maps and filtering one class (the page's own radio buttons, clicked)."""
    script = """<script>
    function seen(selector) { return [...document.querySelectorAll(selector)].filter(e => e.offsetParent !== null); }
    function boxes() { return seen('.card').map(c => { const r = c.getBoundingClientRect();
      return {name: c.querySelector('h2').textContent, left: r.left, top: r.top, width: r.width, height: r.height,
              classes: c.className, thumbs: seen('#' + CSS.escape(c.id) + ' a').map(a => a.className),
              badge: c.querySelector('.badge') && getComputedStyle(c.querySelector('.badge')).backgroundColor}; }); }
    document.querySelectorAll('.card').forEach((c, i) => c.id = 'probe' + i);
    const result = {initial: boxes()};
    document.getElementById('view-confidence').click(); result.confidence = boxes();
    document.getElementById('class-1').click(); result.cat = boxes();
    const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(result);
    document.body.appendChild(pre);
    </script>"""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
                          f"--window-size={width},{height}", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1)))


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (the page's links are checked above)")
def test_sheet_is_a_dense_grid_with_working_switches_in_chromium(colour_onnx, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(14):  # cats (label 1) in every other image; a purple square (hesitant) in every third
        objects = [(1, 10, 10, 30)] if index % 2 else [(2, 40, 60, 36)]
        rgb = colour.scene(96, 128, objects + [(3, 50, 5 + index * 4, 20)], seed=index)
        if index % 3 == 0:
            rgb[8:56, 70:122] = colour.PURPLE
        Image.fromarray(rgb).save(folder / f"img_{index:02d}.png")
    out = tmp_path / "out"
    assert _label(colour_onnx, folder, out, "--sheet", "--overlay", "--confidence").exit_code == 0
    found = _probe(out / "sheet.html", 1280, 900, tmp_path)
    cards = found["initial"]
    report = json.loads((out / "report.json").read_text())["images"]
    from aesipe.infer.sheet import REVIEW_BELOW

    assert len(cards) == 14 and {r["mean_confidence"] < REVIEW_BELOW for r in report.values()} == {True, False}
    first_row = [c for c in cards if abs(c["top"] - cards[0]["top"]) < 1]
    assert len(first_row) >= 5 and all(c["width"] < 1280 / 4 for c in cards)  # a grid, not one card per row
    assert sum(c["top"] < 900 for c in cards) >= 10  # most of them on the first screen
    assert [c["left"] for c in first_row] == sorted(c["left"] for c in first_row)
    ranked = sorted(report, key=lambda rel: (report[rel]["mean_confidence"], rel))
    assert [c["name"] for c in cards] == ranked  # least confident first, row by row
    assert all(c["thumbs"] == ["t-overlay"] for c in cards)  # one thumbnail each: the overlay
    colours = {("review" in c["classes"].split()): c["badge"] for c in cards}
    assert len(colours) == 2 and len(set(colours.values())) == 2  # both sides of the threshold, told apart
    assert all(c["thumbs"] == ["t-confidence"] for c in found["confidence"])
    cats = found["cat"]
    assert cats and len(cats) == sum("cat" in report[rel]["classes"] for rel in report)
    assert all("c1" in c["classes"].split() for c in cats)


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
