"""Synthetic weak-supervision data: textured scenes with a few object classes and exact masks.

Each class is a shape with its own colour and surface texture (a red speckled disc, blue striped
square, ...), so a small CNN can learn them from image-level tags alone, while the scenes keep the
problems of real data: textured background regions (value noise, gradients, stripes), clutter,
objects cut by the border and occluding each other. Objects cover 12-25% of the image; 40% of the
images show one class, 40% two and 20% three. Masks are exact (objects are drawn from the mask,
pixel for pixel), and each image's tags are read back from its final mask, so a fully occluded
object is never tagged.

Every image comes from its own random stream ``(seed, index)``: the output is identical for the same
settings, however often the generation is interrupted and resumed. Written as a VOC-style folder
(see ``aesipe.data.dataset``); numpy + Pillow only.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from aesipe.utils.atomic import atomic_write_bytes, atomic_write_text
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import encode_label_png, load_label_png, voc_palette

from aesipe.tags import format_tags_csv


@dataclass(frozen=True)
class ShapeClass:
    name: str
    shape: str
    colour: tuple[int, int, int]
    texture: str


CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass("disc", "disc", (215, 45, 40), "speckle"),
    ShapeClass("square", "square", (40, 85, 215), "stripes"),
    ShapeClass("triangle", "triangle", (235, 205, 40), "gradient"),
    ShapeClass("ring", "ring", (40, 175, 70), "speckle"),
    ShapeClass("cross", "cross", (205, 50, 200), "checker"),
    ShapeClass("diamond", "diamond", (40, 200, 215), "dots"),
    ShapeClass("star", "star", (245, 135, 30), "gradient"),
    ShapeClass("hexagon", "hexagon", (125, 60, 205), "stripes"),
)
MAX_CLASSES = len(CLASSES)
SETTINGS_FILE = "synth.json"
_CLASS_COUNT_PROBABILITIES = (0.4, 0.4, 0.2)  # 1, 2 or 3 classes in an image
_AREA_RANGE = (0.12, 0.25)  # object area as a fraction of the image
_MIN_VISIBLE = 0.5  # of an object's own area, after occlusion and cropping by the border
_MIN_VISIBLE_OF_IMAGE = 0.08


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Outline of a polygonal shape with circumradius ``r`` (disc and ring are drawn as ellipses)."""
    if shape == "square":
        radii, count = [r], 4
    elif shape == "triangle":
        radii, count = [r], 3
    elif shape == "diamond":
        radii, count = [r, 0.55 * r], 2  # a rhombus: long and short half-diagonals alternate
    elif shape == "hexagon":
        radii, count = [r], 6
    elif shape == "star":
        radii, count = [r, 0.45 * r], 5
    elif shape == "cross":
        arm = 0.36 * r  # half the arm width; the 12 corners of a plus sign
        corners = [(arm, r), (arm, arm), (r, arm), (r, -arm), (arm, -arm), (arm, -r),
                   (-arm, -r), (-arm, -arm), (-r, -arm), (-r, arm), (-arm, arm), (-arm, r)]  # fmt: skip
        cos, sin = math.cos(angle), math.sin(angle)
        return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in corners]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    points = []
    steps = count * len(radii)
    for k in range(steps):
        theta = angle + 2 * math.pi * k / steps
        radius = radii[k % len(radii)]
        points.append((cx + radius * math.cos(theta), cy + radius * math.sin(theta)))
    return points


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """bool size x size mask of one shape."""
    canvas = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "disc":
        draw.ellipse(box, fill=1)
    elif shape == "ring":
        draw.ellipse(box, fill=1)
        inner = 0.55 * r
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=1)
    return np.asarray(canvas, dtype=bool)


def _area_per_r2(shape: str) -> float:
    """Area of the shape divided by its circumradius squared (for sizing objects by area)."""
    areas = {"disc": math.pi, "ring": math.pi * (1 - 0.55**2), "square": 2.0, "triangle": 3 * math.sqrt(3) / 4,
             "diamond": 2 * 0.55, "hexagon": 3 * math.sqrt(3) / 2, "star": 5 * 0.45 * math.sin(2 * math.pi / 10) * 2 / 2,
             "cross": 4 * 0.36 * 2 - 4 * 0.36**2}  # fmt: skip
    return areas[shape]


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid upsampled bicubically."""
    coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
    smooth = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    return np.asarray(smooth, dtype=np.float32) / 255.0


def _stripes(rng: np.random.Generator, size: int, period: float) -> np.ndarray:
    """Sine stripes in [0, 1] at a random angle and phase."""
    angle, phase = rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return 0.5 + 0.5 * np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period + phase)


def _surface(rng: np.random.Generator, texture: str, colour: np.ndarray, size: int) -> np.ndarray:
    """float32 size x size x 3 surface of an object class (the caller keeps the masked pixels)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if texture == "stripes":
        shade = 0.6 + 0.4 * (_stripes(rng, size, rng.uniform(5, 9)) > 0.5)
    elif texture == "checker":
        period, ox, oy = rng.uniform(6, 10), rng.uniform(0, 10), rng.uniform(0, 10)
        shade = 0.6 + 0.4 * (((x + ox) // period + (y + oy) // period) % 2)
    elif texture == "dots":
        period = rng.uniform(6, 9)
        fx, fy = ((x + rng.uniform(0, period)) % period) / period - 0.5, ((y + rng.uniform(0, period)) % period) / period - 0.5
        shade = np.where(fx**2 + fy**2 < 0.09, 0.45, 1.0)
    elif texture == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        ramp = (x * math.cos(angle) + y * math.sin(angle)) / size
        shade = 0.7 + 0.4 * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    else:  # speckle
        shade = 0.85 + 0.3 * rng.random((size, size), dtype=np.float32)
    surface = colour[None, None, :] * shade[..., None]
    return surface + rng.normal(0, 6, (size, size, 3)).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Muted textured regions (Voronoi cells of 2-4 seeds), each with noise, gradient or stripes."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    seeds = rng.uniform(0, size, (int(rng.integers(2, 5)), 2))
    region = np.argmin((x[..., None] - seeds[:, 0]) ** 2 + (y[..., None] - seeds[:, 1]) ** 2, axis=-1)
    image = np.zeros((size, size, 3), np.float32)
    for index in range(len(seeds)):
        grey = rng.uniform(60, 190)
        tint = rng.uniform(-18, 18, 3)  # low saturation keeps the background apart from the classes
        kind = rng.integers(3)
        if kind == 0:
            pattern = _value_noise(rng, size, int(rng.integers(3, 9)))
        elif kind == 1:
            angle = rng.uniform(0, 2 * math.pi)
            ramp = x * math.cos(angle) + y * math.sin(angle)
            pattern = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        else:
            pattern = _stripes(rng, size, rng.uniform(8, 20))
        layer = grey + tint[None, None, :] + rng.uniform(25, 60) * (pattern[..., None] - 0.5)
        image[region == index] = layer[region == index]
    return image


def _clutter(rng: np.random.Generator, image: np.ndarray) -> None:
    """Small muted blobs and bars (background in the mask), drawn before the objects."""
    size = image.shape[0]
    for _ in range(int(rng.integers(3, 9))):
        shape = ("disc", "square", "triangle")[int(rng.integers(3))]
        r = rng.uniform(0.03, 0.07) * size
        where = shape_mask(shape, size, *rng.uniform(0, size, 2), r, rng.uniform(0, 2 * math.pi))
        image[where] = rng.uniform(40, 210) + rng.uniform(-25, 25, 3)


def _visible_enough(visible: np.ndarray, drawn: np.ndarray) -> bool:
    shown = np.count_nonzero(visible)
    return shown >= _MIN_VISIBLE * np.count_nonzero(drawn) and shown >= _MIN_VISIBLE_OF_IMAGE * visible.size


def render_scene(rng: np.random.Generator, size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (uint8 size x size x 3 RGB image, uint8 size x size label mask, 0 = background)."""
    image = _background(rng, size)
    _clutter(rng, image)
    count = min(num_classes, 1 + int(rng.choice(3, p=_CLASS_COUNT_PROBABILITIES)))
    chosen = rng.choice(num_classes, size=count, replace=False)
    for _attempt in range(20):
        mask = np.zeros((size, size), np.uint8)
        layers = []
        for class_index in chosen:
            spec = CLASSES[class_index]
            r = size * math.sqrt(rng.uniform(*_AREA_RANGE) / _area_per_r2(spec.shape))
            cx, cy = rng.uniform(0.6 * r, size - 0.6 * r, 2) if r < size / 1.2 else (size / 2, size / 2)
            where = shape_mask(spec.shape, size, cx, cy, r, rng.uniform(0, 2 * math.pi))
            mask[where] = class_index + 1  # later objects occlude earlier ones
            layers.append((class_index, where))
        if all(_visible_enough(mask == c + 1, where) for c, where in layers):
            break
        chosen = chosen[:-1] if len(chosen) > 1 and _attempt % 5 == 4 else chosen  # crowded: drop one
    for class_index in np.unique(mask[mask > 0]) - 1:
        spec = CLASSES[class_index]
        colour = np.clip(np.array(spec.colour, np.float32) * rng.uniform(0.85, 1.1) + rng.uniform(-12, 12, 3), 0, 255)
        here = mask == class_index + 1
        image[here] = _surface(rng, spec.texture, colour, size)[here]
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), mask


@dataclass(frozen=True)
class SynthSettings:
    num_train: int
    num_val: int
    size: int
    seed: int
    num_classes: int
    image_format: str
    version: int = 1


def _encode_image(image: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    if image_format == "jpg":
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    else:
        Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _check_settings(out_dir: Path, settings: SynthSettings) -> None:
    """A folder is resumed only with the settings it was started with (else the data would mix)."""
    path = out_dir / SETTINGS_FILE
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = None
        if previous != asdict(settings):
            raise UserError(
                f"{out_dir} holds synthetic data made with other settings ({path.name}: {previous}); "
                "choose another folder or delete this one"
            )
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} exists and is not a synthetic dataset folder; choose an empty or new folder")
    atomic_write_text(path, json.dumps(asdict(settings), indent=2) + "\n")


def generate(
    out_dir: str | Path,
    num_train: int = 320,
    num_val: int = 80,
    size: int = 128,
    seed: int = 0,
    num_classes: int = 5,
    image_format: str = "jpg",
    progress: bool = True,
) -> Path:
    """Write a synthetic VOC-style dataset to ``out_dir`` and return it; resumes an interrupted run.

    Layout: ``class_names.txt``, ``JPEGImages/<id>.jpg`` (or .png), ``SegmentationClass/<id>.png``
    (palette PNG, exact masks), ``ImageSets/Segmentation/{train,val}.txt``, ``labels_{train,val}.csv``
    and ``synth.json`` (the settings). Ids are ``synth_00000``...; val ids follow the train ids.
    """
    if not 1 <= num_classes <= MAX_CLASSES:
        raise UserError(f"synthetic data has 1 to {MAX_CLASSES} classes, not {num_classes}")
    if size < 32:
        raise UserError(f"image size must be at least 32 pixels, not {size}")
    if num_train < 1 or num_val < 0:
        raise UserError(f"need at least one training image (got {num_train} train, {num_val} val)")
    if image_format not in ("jpg", "png"):
        raise UserError(f"image format must be jpg or png, not {image_format!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file: give a folder for the synthetic dataset (it is created if missing)")
    settings = SynthSettings(num_train, num_val, size, seed, num_classes, image_format)
    _check_settings(out_dir, settings)
    names = ("background",) + tuple(c.name for c in CLASSES[:num_classes])
    palette = voc_palette()

    from tqdm import tqdm

    tags: dict[str, tuple[int, ...]] = {}
    for index in tqdm(range(num_train + num_val), desc="synthetic images", unit="img", disable=not progress):
        image_id = f"synth_{index:05d}"
        image_path = out_dir / "JPEGImages" / f"{image_id}.{image_format}"
        mask_path = out_dir / "SegmentationClass" / f"{image_id}.png"
        rng = np.random.default_rng([seed, index])  # one stream per image: resuming changes nothing
        if image_path.is_file() and mask_path.is_file():
            mask = load_label_png(mask_path)
        else:
            image, mask = render_scene(rng, size, num_classes)
            atomic_write_bytes(mask_path, encode_label_png(mask, palette))
            atomic_write_bytes(image_path, _encode_image(image, image_format))
        tags[image_id] = tuple(int(v) - 1 for v in np.unique(mask) if v != 0)

    ids = list(tags)
    splits = {"train": ids[:num_train], "val": ids[num_train:]}
    for split, split_ids in splits.items():
        atomic_write_text(out_dir / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in split_ids))
        atomic_write_text(out_dir / f"labels_{split}.csv", format_tags_csv({i: tags[i] for i in split_ids}, names[1:]))
    atomic_write_text(out_dir / "class_names.txt", "\n".join(names) + "\n")
    return out_dir
