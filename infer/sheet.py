"""``OUTPUT/sheet.html``: a contact sheet for the reviewer -- per image, thumbnails of the image, its overlay
and its confidence map (each a link to the full file), the classes with their pixel fractions and the mean
confidence; least confident first when there is confidence, else by name. Thumbnails live in
``OUTPUT/sheet/`` and are made from the written masks and confidence maps (so a re-run's kept masks appear
too); one whose sources have not changed since it was made is kept. Every link is relative: the folder
can be moved or served as it is.
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

SHEET_FILE, SHEET_FOLDER = "sheet.html", "sheet"
THUMB_SIDE = 240

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.4em;margin:0 0 .3em} p.meta{color:#555;margin:.2em 0 1em}
.legend span,.classes li{display:inline-flex;align-items:center;margin:0 .9em .3em 0}
.sw{display:inline-block;width:.9em;height:.9em;border:1px solid #888;margin-right:.35em}
.grid{display:flex;flex-direction:column;gap:.8em}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em .8em;margin:0}
.card h2{font-size:1em;margin:0 0 .3em;word-break:break-all} .card .score{color:#a33;font-weight:600}
.thumbs{display:flex;gap:.5em;flex-wrap:wrap} .thumbs img{max-height:180px;border:1px solid #ccc}
.thumbs figure{margin:0} .thumbs figcaption{font-size:.75em;color:#666}
.classes{list-style:none;padding:0;margin:.4em 0 0} .failed li{color:#a33}
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


def write_sheet(output_dir: Path, entries: list[SheetEntry], failed: list[tuple[str, str]], classes: Sequence[str],
                palette: np.ndarray, names: dict[str, str], title: str) -> Path:
    """Write the thumbnails and ``sheet.html``; ``names``: report name -> mask name (``a/b.png``)."""
    has_confidence = any(e.confidence is not None for e in entries)
    if has_confidence:
        entries = sorted(entries, key=lambda e: (e.record.get("mean_confidence", 2.0), e.rel))
    else:
        entries = sorted(entries, key=lambda e: e.rel)
    index = {name: i for i, name in enumerate(classes)}
    cards = []
    for entry in entries:
        stem = output_dir / SHEET_FOLDER / names[entry.rel][: -len(".png")]
        thumbs = _thumbnails(entry, stem, palette)
        links = [("image", entry.image), ("overlay", entry.overlay or entry.mask), ("confidence", entry.confidence)]
        figures = "".join(
            f'<figure><a href="{_href(target, output_dir)}"><img src="{_href(thumbs[kind], output_dir)}" '
            f'alt="{kind} of {html.escape(entry.rel)}" loading="lazy"></a><figcaption>{kind}</figcaption></figure>'
            for kind, target in links if kind in thumbs and target is not None)
        fractions = sorted(entry.record.get("classes", {}).items(), key=lambda kv: -kv[1])
        class_items = "".join(f"<li>{_swatch(palette, index[name]) if name in index else ''}{html.escape(name)} "
                              f"{100 * value:.1f}%</li>" for name, value in fractions)
        score = ""
        if "mean_confidence" in entry.record:
            score = (f'<span class="score">confidence {entry.record["mean_confidence"]:.3f}</span>, '
                     f'{100 * entry.record["uncertain_fraction"]:.1f}% of pixels uncertain')
        cards.append(f'<figure class="card"><h2>{html.escape(entry.rel)}</h2><div>{score}</div>'
                     f'<div class="thumbs">{figures}</div><ul class="classes">{class_items}</ul></figure>')
    legend = "".join(f"<span>{_swatch(palette, i)}{html.escape(name)}</span>" for i, name in enumerate(classes) if i)
    order = "least confident first" if has_confidence else "by name"
    failures = ""
    if failed:
        items = "".join(f"<li>{html.escape(rel)}: {html.escape(reason)}</li>" for rel, reason in failed)
        failures = f'<h2>{len(failed)} failed</h2><ul class="failed">{items}</ul>'
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="meta">{len(entries)} labelled images, {order}.</p><div class="legend">{legend}</div>'
            f'<div class="grid">{"".join(cards)}</div>{failures}</body></html>\n')
    path = output_dir / SHEET_FILE
    atomic_write_text(path, page)
    return path
