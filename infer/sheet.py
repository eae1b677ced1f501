"""``OUTPUT/sheet.html``: the page a reviewer scans -- a dense grid of cards, least confident first.

Each card: the overlay thumbnail (or, by a switch at the top, the image or the confidence map; each links to the
full file), the image's name, its mean confidence on a badge coloured by ``REVIEW_BELOW`` with its share of
uncertain pixels, and its classes with swatches and pixel fractions. The top of the page names the input and
holds the legends (every class with its swatch, background included; what the badge colours mean; the
confidence map's scale, white = confident) and a filter by class. The switches are plain CSS (``:has``), no
script: a browser without it shows the overlays of all cards. Thumbnails live in ``OUTPUT/sheet/`` and are made
from the written masks and confidence maps (so a re-run's kept masks appear too); one whose sources have not
changed since it was made is kept. Every link is relative: the folder can be moved or served as it is.
"""
from __future__ import annotations

import html
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

import numpy as np
from PIL import Image

from aesipe.imaging import read_image
from aesipe.utils.atomic import atomic_write_bytes, atomic_write_text
from aesipe.utils.labelpng import load_label_png, overlay

from .postprocess import resize_labels_nearest
from .report import UNCERTAIN_BELOW

SHEET_FILE, SHEET_FOLDER = "sheet.html", "sheet"
THUMB_SIDE = 240
REVIEW_BELOW = 0.9
"""A card whose mean confidence is below this gets the "review" colour; at or above it, the "confident" one."""
VIEWS = ("overlay", "image", "confidence")

_STYLE = """
*{box-sizing:border-box} body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f5;color:#1f2328}
header{position:sticky;top:0;z-index:1;background:#fff;border-bottom:1px solid #d0d7de;padding:.6em 1em}
h1{font-size:1.15em;margin:0} .meta{color:#57606a;margin:.15em 0 .4em;font-size:.9em}
.controls{display:flex;flex-wrap:wrap;gap:.3em 1.4em;font-size:.85em;align-items:center}
.controls fieldset{border:0;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:.2em .7em;align-items:center}
.controls legend{float:left;font-weight:600;margin-right:.4em} .controls label{white-space:nowrap;cursor:pointer}
.sw{display:inline-block;width:.85em;height:.85em;border:1px solid #57606a;margin-right:.3em;vertical-align:-.1em}
.badge{display:inline-block;padding:0 .35em;border-radius:.3em;font-weight:600;font-variant-numeric:tabular-nums}
.review .badge,.badge.review{background:#ffe2e0;color:#a40e26} .confident .badge,.badge.confident{background:#dafbe1;color:#116329}
.scale{display:inline-block;width:7em;height:.8em;border:1px solid #57606a;vertical-align:-.1em;
 background:linear-gradient(90deg,#000,#fff)}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:.6em;padding:.8em 1em}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.35em;min-width:0;font-size:.8em}
.card.review{border-color:#ff8182} .card a{display:block}
.card img{display:block;width:100%;aspect-ratio:4/3;object-fit:contain;background:#eaeef2}
.card .t-image,.card .t-confidence{display:none}
.card h2{font-size:1em;margin:.3em 0 .1em;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.score{margin:0 0 .2em;color:#57606a} .classes{list-style:none;padding:0;margin:0;color:#1f2328}
.classes li{display:inline-block;margin-right:.6em;white-space:nowrap}
#failed{padding:0 1em 1em} #failed li{color:#a40e26}
"""


@dataclass
class SheetEntry:
    rel: str
    """The image's name in the report."""
    image: Path
    mask: Path
    record: dict
    overlay: Path | None = None
    confidence: Path | None = None


def _fresh(target: Path, sources: Sequence[Path]) -> bool:
    try:
        return target.stat().st_mtime_ns >= max(s.stat().st_mtime_ns for s in sources)
    except OSError:
        return False


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _thumbnails(entry: SheetEntry, stem: Path, palette: np.ndarray) -> dict[str, Path]:
    """The entry's thumbnails under ``stem``.*, (re)made when missing or older than their sources."""
    paths = {"image": stem.with_name(stem.name + ".jpg"), "overlay": stem.with_name(stem.name + ".overlay.jpg")}
    if entry.confidence is not None:
        paths["confidence"] = stem.with_name(stem.name + ".confidence.png")
    sources = [entry.image, entry.mask] + ([entry.confidence] if entry.confidence is not None else [])
    if all(_fresh(path, sources) for path in paths.values()):
        return paths
    rgb = read_image(entry.image, THUMB_SIDE).rgb  # JPEGs decode at reduced size (draft mode)
    height, width = rgb.shape[:2]
    labels = resize_labels_nearest(load_label_png(entry.mask), height, width)
    atomic_write_bytes(paths["image"], _jpeg(rgb))
    atomic_write_bytes(paths["overlay"], _jpeg(overlay(rgb, labels, palette)))
    if entry.confidence is not None:
        with Image.open(entry.confidence) as conf:
            small = conf.convert("L").resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
        buffer = io.BytesIO()
        small.save(buffer, format="PNG")
        atomic_write_bytes(paths["confidence"], buffer.getvalue())
    return paths


def _href(path: Path, base: Path) -> str:
    try:
        return quote(Path(os.path.relpath(path.resolve(), base.resolve())).as_posix())
    except ValueError:  # another drive (Windows): an absolute link
        return path.resolve().as_uri()


def _swatch(palette: np.ndarray, index: int) -> str:
    r, g, b = (int(v) for v in palette[index])
    return f'<span class="sw" style="background:rgb({r},{g},{b})"></span>'


def _percent(fraction: float) -> str:
    """A pixel fraction as the card shows it: one decimal, and "<0.1%" for a class that is there but tiny."""
    return "<0.1%" if 0 < fraction < 0.0005 else f"{100 * fraction:.1f}%"


def _input_of(entries: Sequence[SheetEntry]) -> str:
    """The folder the labelled images came from (their common folder)."""
    if not entries:
        return ""
    try:
        return os.path.commonpath([str(Path(e.image).parent) for e in entries])
    except ValueError:  # images on different drives
        return ""


def _switches(classes: Sequence[str], palette: np.ndarray, present: Sequence[int],
              has_confidence: bool) -> tuple[str, str]:
    """The view switch and the class filter (whose swatches are the class legend), with their CSS."""
    views = VIEWS if has_confidence else VIEWS[:2]
    view = "".join(f'<label><input type="radio" name="view" id="view-{v}"{" checked" if v == views[0] else ""}> '
                   f"{'confidence map' if v == 'confidence' else v}</label>" for v in views)
    filters = '<label><input type="radio" name="class" id="class-all" checked> all</label>' + "".join(
        f'<label><input type="radio" name="class" id="class-{i}"> {_swatch(palette, i)}{html.escape(classes[i])}</label>'
        for i in range(len(classes)))
    rules = [f"body:has(#view-{v}:checked) .card .t-{v}{{display:block}}" for v in views[1:]]
    rules += [f"body:has(#view-{v}:checked) .card .t-overlay{{display:none}}" for v in views[1:]]
    rules += [f"body:has(#class-{i}:checked) .card:not(.c{i}){{display:none}}" for i in present]
    rules += [f"body:has(#class-{i}:checked) .card{{display:none}}" for i in range(len(classes)) if i not in present]
    controls = (f'<div class="controls"><fieldset><legend>show</legend>{view}</fieldset>'
                f'<fieldset><legend>classes</legend>{filters}</fieldset></div>')
    return controls, "\n".join(rules)


def _legend(has_confidence: bool) -> str:
    if not has_confidence:
        return ""
    return (f'<p class="meta">mean confidence: <span class="badge review">below {REVIEW_BELOW:g}</span> review '
            f'first, <span class="badge confident">{REVIEW_BELOW:g} or more</span> confident. Confidence map: '
            f'black 0 <span class="scale"></span> 1 white = confident; a pixel below {UNCERTAIN_BELOW:g} counts as '
            "uncertain.</p>")


def _card(entry: SheetEntry, thumbs: dict[str, Path], output_dir: Path, classes: Sequence[str],
          palette: np.ndarray) -> str:
    index = {name: i for i, name in enumerate(classes)}
    links = {"overlay": entry.overlay or entry.mask, "image": entry.image, "confidence": entry.confidence}
    name = html.escape(entry.rel)
    figures = "".join(
        f'<a class="t-{kind}" href="{_href(links[kind], output_dir)}"><img src="{_href(thumbs[kind], output_dir)}" '
        f'alt="{kind} of {name}" loading="lazy"></a>'
        for kind in VIEWS if kind in thumbs and links[kind] is not None)
    fractions = sorted(entry.record.get("classes", {}).items(), key=lambda kv: -kv[1])
    items = "".join(f"<li>{_swatch(palette, index[c]) if c in index else ''}{html.escape(c)} {_percent(v)}</li>"
                    for c, v in fractions)
    marks = [f"c{index[c]}" for c, v in fractions if c in index and v > 0]
    score = ""
    if "mean_confidence" in entry.record:
        mean = entry.record["mean_confidence"]
        marks.append("review" if mean < REVIEW_BELOW else "confident")
        score = (f'<p class="score"><span class="badge">{mean:.3f}</span> '
                 f'{_percent(entry.record["uncertain_fraction"])} uncertain</p>')
    return (f'<article class="card {" ".join(marks)}">{figures}<h2 title="{name}">{name}</h2>{score}'
            f'<ul class="classes">{items}</ul></article>')


def write_sheet(output_dir: Path, entries: list[SheetEntry], failed: list[tuple[str, str]], classes: Sequence[str],
                palette: np.ndarray, names: dict[str, str], title: str) -> Path:
    """Write the thumbnails and ``sheet.html``; ``names``: report name -> mask name (``a/b.png``); ``title``: the
    page's heading (it should name the input)."""
    has_confidence = any(e.confidence is not None for e in entries)
    if has_confidence:
        entries = sorted(entries, key=lambda e: (e.record.get("mean_confidence", 2.0), e.rel))
    else:
        entries = sorted(entries, key=lambda e: e.rel)
    cards = []
    for entry in entries:
        thumbs = _thumbnails(entry, output_dir / SHEET_FOLDER / names[entry.rel][: -len(".png")], palette)
        cards.append(_card(entry, thumbs, output_dir, classes, palette))
    index = {name: i for i, name in enumerate(classes)}
    present = sorted({index[c] for e in entries for c, v in e.record.get("classes", {}).items() if c in index and v > 0})
    controls, rules = _switches(classes, palette, present, has_confidence)
    order = "least confident first" if has_confidence else "by name"
    source = _input_of(entries)
    flagged = sum(1 for e in entries if e.record.get("mean_confidence", 1.0) < REVIEW_BELOW) if has_confidence else 0
    summary = (f"{len(entries)} labelled images" + (f" from {html.escape(source)}" if source else "") + f", {order}"
               + (f"; {flagged} below {REVIEW_BELOW:g}" if has_confidence else "")
               + (f'; <a href="#failed">{len(failed)} failed</a>' if failed else "") + ".")
    failures = ""
    if failed:
        items = "".join(f"<li>{html.escape(rel)}: {html.escape(reason)}</li>" for rel, reason in failed)
        failures = f'<section id="failed"><h2>{len(failed)} failed</h2><ul>{items}</ul></section>'
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}{rules}</style></head><body><header><h1>{html.escape(title)}</h1>"
            f'<p class="meta">{summary}</p>{controls}{_legend(has_confidence)}</header>'
            f'<main>{"".join(cards)}</main>{failures}</body></html>\n')
    path = output_dir / SHEET_FILE
    atomic_write_text(path, page)
    return path
