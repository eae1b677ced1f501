"""Readers of the masks people bring back from review: a folder of index PNGs, CVAT, COCO, Label Studio.

Each returns (candidates, problems). Conventions of each format:
- folder of index or palette PNGs (``<id>.png``, any depth): the values are the run's label values (255 =
  void), or, with a ``class_names.txt`` in the folder (one name per line, background first), the classes of
  those names;
- CVAT "Segmentation mask 1.1" (folder or zip): ``labelmap.txt`` gives each colour's class; the colour masks
  are ``SegmentationClass/<name>.png``;
- COCO ``annotations.json`` (polygons or RLE, rasterised by pycocotools): each image of ``images`` is one
  mask, its annotations painted in order over background (a later one wins where two overlap; crowd regions
  too);
- a Label Studio JSON export: per task, its newest annotation that was not skipped; brush results (its RLE,
  ``aesipe.labelstudio_rle``) and polygons painted in order over background (a later region wins).
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from PIL import Image, ImageDraw

from aesipe.labelstudio_rle import BrushDecodeError, decode_mask
from aesipe.utils.errors import UserError

from .sources import Candidate, SourceFiles, iter_pngs, open_png, pixels

CLASS_NAMES_FILE = "class_names.txt"
CVAT_LABELMAP = "labelmap.txt"
CVAT_MASKS = "SegmentationClass"
COCO_HINT = "importing COCO needs pycocotools (the standard COCO mask code): pip install 'aesipe[coco]'"
Read = tuple[list[Candidate], list[str]]


def _strip_png(name: str) -> str:
    return name[: -len(".png")] if name.lower().endswith(".png") else name


# -- a folder of index PNGs ----------------------------------------------------------------------------------
def read_index_folder(files: SourceFiles) -> Read:
    names = None
    if CLASS_NAMES_FILE in files.names():
        lines = files.read(CLASS_NAMES_FILE).decode("utf-8", "replace").splitlines()
        names = {i: line.strip() for i, line in enumerate(n for n in lines if n.strip())}
    candidates, problems = [], []
    for name in iter_pngs(files):
        try:
            image = open_png(files.read(name), name)
            if image.mode not in ("P", "L"):
                raise ValueError(f"{name}: a {image.mode} image, not an index or palette PNG (colour masks need "
                                 "their colour map: import a CVAT export with its labelmap.txt)")
            candidates.append(Candidate(_strip_png(name), name, pixels(image, name), names))
        except ValueError as exc:
            problems.append(str(exc))
    return candidates, problems


# -- CVAT Segmentation mask 1.1 ------------------------------------------------------------------------------
def _cvat_colours(text: str) -> tuple[dict[tuple[int, int, int], str], list[str]]:
    colours, problems = {}, []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            rgb = tuple(int(v) for v in rest.partition(":")[0].split(","))
            if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise ValueError
        except ValueError:
            problems.append(f"{CVAT_LABELMAP} line {number}: expected 'name:r,g,b::', got {line.strip()!r}")
            continue
        if rgb in colours:
            problems.append(f"{CVAT_LABELMAP}: {colours[rgb]!r} and {name.strip()!r} share the colour {rgb}")
        colours[rgb] = name.strip()
    return colours, problems


def read_cvat(files: SourceFiles) -> Read:
    labelmap = files.find(CVAT_LABELMAP)
    if labelmap is None:
        raise UserError(f"{files.path}: no {CVAT_LABELMAP} (not a CVAT 'Segmentation mask 1.1' export)")
    colours, problems = _cvat_colours(files.read(labelmap).decode("utf-8", "replace"))
    root = labelmap[: -len(CVAT_LABELMAP)]
    names = {code: name for code, name in enumerate(colours.values())}
    packed = {(r << 16) | (g << 8) | b: code for code, (r, g, b) in enumerate(colours)}
    candidates = []
    for name in iter_pngs(files, root + CVAT_MASKS):
        try:
            rgb = pixels(open_png(files.read(name), name), name, "RGB").astype(np.int64)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        flat = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        values, inverse = np.unique(flat, return_inverse=True)
        unknown = [int(v) for v in values if int(v) not in packed]
        if unknown:
            shown = ", ".join(str(((v >> 16) & 255, (v >> 8) & 255, v & 255)) for v in unknown[:3])
            problems.append(f"{name}: colour(s) {shown} not in {CVAT_LABELMAP}")
            continue
        codes = np.array([packed[int(v)] for v in values], np.uint16)[inverse.reshape(flat.shape)]
        key = _strip_png(name[len(root + CVAT_MASKS) + 1:])
        candidates.append(Candidate(key, name, codes, names))
    return candidates, problems


# -- COCO ----------------------------------------------------------------------------------------------------
def _coco_mask():
    try:
        import pycocotools.mask as coco_mask
    except ImportError:
        raise UserError(COCO_HINT) from None
    return coco_mask


def read_coco(document: dict, where: str) -> Read:
    coco_mask = _coco_mask()
    if not all(isinstance(document.get(k), list) for k in ("images", "annotations", "categories")):
        raise UserError(f"{where}: a COCO file needs 'images', 'annotations' and 'categories' lists")
    names, problems = {}, []
    for category in document["categories"]:
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or category["id"] <= 0:
            problems.append(f"{where}: category {category!r} needs a positive integer 'id' and a 'name'")
            continue
        if category["id"] > 65535:
            problems.append(f"{where}: category id {category['id']} is larger than a mask can hold (65535)")
            continue
        names[category["id"]] = str(category.get("name", ""))
    by_image: dict[object, list[dict]] = {}
    for annotation in document["annotations"]:
        if isinstance(annotation, dict):
            by_image.setdefault(annotation.get("image_id"), []).append(annotation)
    candidates = []
    for image in document["images"]:
        try:
            height, width = int(image["height"]), int(image["width"])
            file_name = str(image["file_name"])
        except (TypeError, KeyError, ValueError):
            problems.append(f"{where}: image entry {str(image)[:80]} needs id, file_name, height and width")
            continue
        if not (0 < height * width <= 1 << 30):
            problems.append(f"{where}: {file_name}: size {width}x{height} is not an image's")
            continue
        labels = np.zeros((height, width), np.uint16)  # 0 = background, else the category id
        for annotation in by_image.get(image.get("id"), []):
            category = annotation.get("category_id")
            if category not in names:
                problems.append(f"{where}: {file_name}: annotation {annotation.get('id')} has unknown category {category!r}")
                continue
            try:
                segmentation = annotation["segmentation"]
                if isinstance(segmentation, list):  # polygons
                    rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
                elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                    rle = coco_mask.frPyObjects(segmentation, height, width)
                else:
                    rle = {"size": segmentation["size"], "counts": str(segmentation["counts"]).encode()}
                    if list(rle["size"]) != [height, width]:
                        raise ValueError(f"RLE size {rle['size']} is not the image's {[height, width]}")
                painted = coco_mask.decode(rle).astype(bool)
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
                problems.append(f"{where}: {file_name}: annotation {annotation.get('id')}: bad segmentation ({exc})")
                continue
            labels[painted] = category
        candidates.append(Candidate(file_name, f"image {image.get('id')} ({file_name})", labels,
                                    {0: "background", **names}))
    return candidates, problems


# -- Label Studio --------------------------------------------------------------------------------------------
def _task_image(task: dict) -> str | None:
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    if isinstance(data.get("aesipe_image"), str):  # written by aesipe-label --format labelstudio
        return data["aesipe_image"]
    reference = data.get("image") or next((v for v in data.values() if isinstance(v, str)), None)
    if not isinstance(reference, str):
        return None
    parsed = urlparse(reference)
    if "d" in parse_qs(parsed.query):  # local-file serving: /data/local-files/?d=folder/name.jpg
        return unquote(parse_qs(parsed.query)["d"][0])
    return unquote(parsed.path)


def _annotation_time(annotation: dict) -> str:
    return str(annotation.get("updated_at") or annotation.get("created_at") or "")


def _newest_annotation(task: dict) -> dict | None:
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    return max(done, key=lambda a: (_annotation_time(a), a.get("id") or 0), default=None)


def _paint_result(labels: np.ndarray, result: dict, codes: dict[str, int], where: str) -> str | None:
    """Paint one region of an annotation into ``labels``; returns a problem, or None."""
    kind = str(result.get("type", "")).lower()
    value = result.get("value") if isinstance(result.get("value"), dict) else {}
    if kind not in ("brushlabels", "polygonlabels"):
        return f"{where}: a {kind or 'untyped'} region is not a mask (use brush or polygon labels)"
    names = value.get(kind) or []
    if len(names) != 1 or not isinstance(names[0], str):
        return f"{where}: a region needs exactly one label, got {names!r}"
    code = codes.setdefault(names[0], len(codes) + 1)
    height, width = labels.shape
    given = (result.get("original_height"), result.get("original_width"))
    if given != (height, width):
        return f"{where}: region of a {given[1]}x{given[0]} image, the task's other regions are {width}x{height}"
    if kind == "brushlabels":
        try:
            labels[decode_mask(value.get("rle") or [], height, width)] = code
        except BrushDecodeError as exc:
            return f"{where}: brush RLE: {exc}"
        return None
    try:
        points = [(float(x) * width / 100.0, float(y) * height / 100.0) for x, y in value.get("points", [])]
    except (TypeError, ValueError):
        return f"{where}: polygon points must be [x, y] percentages"
    if len(points) >= 3:
        canvas = Image.new("L", (width, height), 0)
        ImageDraw.Draw(canvas).polygon(points, fill=1, outline=1)
        labels[np.asarray(canvas, bool)] = code
    return None


def read_labelstudio(tasks: list, where: str) -> Read:
    candidates, problems = [], []
    for number, task in enumerate(tasks, start=1):
        if not isinstance(task, dict):
            problems.append(f"{where}: entry {number} is not a task")
            continue
        label = f"task {task.get('id', number)}"
        image = _task_image(task)
        annotation = _newest_annotation(task)
        if annotation is None:
            continue  # not reviewed (or skipped): nothing to bring back
        if image is None:
            problems.append(f"{where}: {label}: no image reference in its data")
            continue
        results = [r for r in annotation.get("result") or [] if isinstance(r, dict)]
        where_task = f"{where}: {label}"
        if not results:  # reviewed, nothing painted: the whole image is background
            candidates.append(Candidate(image, f"{label}, annotation {annotation.get('id')}", None, None,
                                        _annotation_time(annotation)))
            continue
        size = (results[0].get("original_height"), results[0].get("original_width"))
        if not all(isinstance(v, int) and v > 0 for v in size) or size[0] * size[1] > 1 << 30:
            problems.append(f"{where_task}: a region without a valid original_width/original_height")
            continue
        labels = np.zeros(size, np.uint16)
        codes: dict[str, int] = {}
        found = [p for r in results if (p := _paint_result(labels, r, codes, where_task))]
        if found:
            problems += found
            continue
        names = {0: "background", **{code: name for name, code in codes.items()}}
        candidates.append(Candidate(image, f"{label}, annotation {annotation.get('id')}", labels, names,
                                    _annotation_time(annotation)))
    return candidates, problems


# -- which format -------------------------------------------------------------------------------------------
def read_source(source: Path) -> tuple[str, Read]:
    """(kind, (candidates, problems)) of a reviewed-mask source; the kind is found from its content."""
    if not source.exists():
        raise UserError(f"correction source not found: {source}")
    if source.is_file() and source.suffix.lower() == ".json":
        try:
            document = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"cannot read {source} as JSON: {exc}") from None
        if isinstance(document, dict) and "annotations" in document and "images" in document:
            return "coco", read_coco(document, source.name)
        if isinstance(document, list) and all(isinstance(t, dict) and "data" in t for t in document):
            return "labelstudio", read_labelstudio(document, source.name)
        raise UserError(f"{source}: neither a COCO annotations file nor a Label Studio JSON export")
    try:
        files = SourceFiles(source)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        if files.find(CVAT_LABELMAP) is not None:
            return "cvat", read_cvat(files)
        if source.is_file():
            raise UserError(f"{source}: a zip without {CVAT_LABELMAP} (expected a CVAT 'Segmentation mask 1.1' export)")
        return "png", read_index_folder(files)
    finally:
        files.close()


def image_key_variants(key: str) -> list[str]:
    """The ids a source's key may name: its path without the image suffix, then its file name's stem (a
    Label Studio upload's '<8 hex>-' prefix removed too)."""
    path = PurePosixPath(key.replace("\\", "/").lstrip("/"))
    stem = path.name.rsplit(".", 1)[0] if "." in path.name else path.name
    whole = str(path.with_name(stem)) if path.name else stem
    variants = [whole, stem]
    head, dash, rest = stem.partition("-")
    if dash and len(head) == 8 and all(c in "0123456789abcdef" for c in head):
        variants.append(rest)
    return list(dict.fromkeys(v for v in variants if v))
