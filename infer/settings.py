"""``LabelSettings``: everything a user chooses about a labelling job, in one frozen, validated object.

``aesipe-label`` builds it from its flags, an app builds it itself (``LabelSettings(scales=(1.0, 0.75))``),
and it is handed whole to ``Labeler``, to ``label_folder`` and through it to either engine (it pickles, so
the Ray workers get the same object). Every default lives here and nowhere else: the CLI's flags take
their defaults from the fields.

Each field declares what it affects (``field(metadata={"affects": ...})``):
- ``mask``: what a mask is made from; these fields are the options part of each mask's record
  (``fingerprint.py``), so a re-run with another value redoes the mask;
- ``run``: where and how fast the model runs; never changes a mask;
- ``outputs``: what the folder job writes besides the masks;
- ``engine``: which engine schedules the job.
The report records every field (``as_record``).

What can only be checked against a model (a pseudo-labeller refuses ``tile``, class names must exist, ...)
is checked by ``check_for_model`` when the model's metadata is read.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from aesipe.contract import ModelInfo
from aesipe.utils.errors import UserError

FORMATS = ("png", "coco", "cvat", "labelstudio")
"""Output formats, in the order they are written; ``png`` (the masks) is always made."""
ENGINES = ("local", "ray")
MIN_MAX_SIDE = 16
MIN_TILE = 32
MAX_TILE_OVERLAP = 0.9
DEFAULT_TILE_OVERLAP = 1 / 3


def _affects(kind: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"affects": kind, "doc": doc})


@dataclass(frozen=True)
class LabelSettings:
    """What the user chose for labelling (see the module docstring); checked when made."""

    # -- what a mask is made from (recorded in each mask) ---------------------------------------------------
    scales: tuple[float, ...] = _affects("mask", (1.0,), "Segmenters: test-time scales (scores are fused).")
    flip: bool = _affects("mask", False, "Segmenters: also run the mirror image and fuse.")
    crf: bool = _affects("mask", False, "Refine with a dense CRF.")
    max_side: int | None = _affects("mask", 2048, "Images with a longer side are labelled at this size and the "
                                                  "result resized back (None: any size).")
    tile: int | None = _affects("mask", None, "Segmenters: label in overlapping tiles of this size at full "
                                              "resolution (not downscaled by max_side).")
    tile_overlap: float | None = _affects("mask", None, f"Fraction of a tile its neighbours overlap (with tile; "
                                                        f"default {DEFAULT_TILE_OVERLAP:.3g}).")
    classes: tuple[str, ...] | None = _affects("mask", None, "Segmenters: only these classes (the others count "
                                                             "as background).")
    # -- where and how fast ---------------------------------------------------------------------------------
    device: str = _affects("run", "auto", "auto | cpu | cuda | cuda:N.")
    providers: tuple[str, ...] | None = _affects("run", None, "ONNX Runtime execution providers, in order "
                                                              "(default: from device).")
    half: bool = _affects("run", False, "Require a float16 model.")
    threads: int | None = _affects("run", None, "ONNX Runtime intra-op threads per stream (default: the cores "
                                                "shared out between the streams).")
    streams: int | None = _affects("run", None, "Model calls that run at once on a CPU, one session each "
                                                "(default: a segmenter's 2 on 2+ cores, else 1).")
    batch_size: int = _affects("run", 4, "Images per model call (same-size images batch together; a "
                                         "pseudo-labeller's also need the same tags).")
    workers: int | None = _affects("run", None, "Decode/encode threads of the local engine (default: min(4, cores)).")
    # -- what the folder job writes ---------------------------------------------------------------------------
    tags_csv: Path | None = _affects("outputs", None, "CSV 'image,labels' of the images' tags (pseudo-labellers).")
    overlay: bool = _affects("outputs", False, "Also write blended previews to OUTPUT/overlays/.")
    confidence: bool = _affects("outputs", False, "Also write confidence maps, per-image confidence in the "
                                                  "report and review.csv.")
    formats: tuple[str, ...] = _affects("outputs", ("png",), "png | coco | cvat (png, the masks, always).")
    sheet: bool = _affects("outputs", False, "Also write sheet.html, a contact sheet for review.")
    image_root: str | None = _affects("outputs", None, "formats labelstudio: the tasks' image URL is this + the "
                                                       "image's path below INPUT (default: Label Studio's "
                                                       "local-file serving, /data/local-files/?d=<path>).")
    reviewed: Path | None = _affects("outputs", None, "A run's reviewed masks (RUN/corrections): those images get "
                                                      "the reviewed mask, marked reviewed, never relabelled.")
    overwrite: bool = _affects("outputs", False, "Redo every mask, valid or not.")
    # -- which engine ---------------------------------------------------------------------------------------
    engine: str = _affects("engine", "local", "local (threads) | ray (a Ray cluster).")
    ray_address: str | None = _affects("engine", None, "engine ray: the cluster to join (default: a new local one).")
    actors: int | None = _affects("engine", None, "engine ray: labelling actors (default: one per GPU, else one "
                                                  "per 4 CPUs).")

    def __post_init__(self) -> None:
        set_ = self._normalise
        set_("scales", check_scales(self.scales, "--scales"))
        for name in ("batch_size", "workers", "threads", "streams", "actors"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise UserError(f"--{name.replace('_', '-')} must be at least 1 (a whole number), got {value!r}")
        if self.max_side is not None and self.max_side < MIN_MAX_SIDE:
            raise UserError(f"--max-side must be at least {MIN_MAX_SIDE}, got {self.max_side}")
        if self.providers is not None:
            set_("providers", tuple(str(p) for p in self.providers))
        if self.tags_csv is not None:
            set_("tags_csv", Path(self.tags_csv))
        set_("formats", parse_formats(self.formats))
        if "labelstudio" in self.formats and not self.confidence:
            set_("confidence", True)  # a task's score is the image's mean confidence
        if self.image_root is not None and "labelstudio" not in self.formats:
            raise UserError("--image-root is for --format labelstudio (the tasks' image URLs)")
        if self.reviewed is not None:
            set_("reviewed", Path(self.reviewed))
        set_("tile_overlap", _check_tile(self.tile, self.tile_overlap))
        if self.tile is not None and (self.scales != (1.0,) or self.crf):
            raise UserError(f"--tile runs at scale 1.0 without a CRF (the CRF would need the whole image's "
                            f"probabilities in memory): drop {'--scales' if self.scales != (1.0,) else '--crf'}")
        set_("classes", _parse_classes(self.classes))
        if self.engine not in ENGINES:
            raise UserError(f"--engine must be {' or '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "local" and (self.ray_address is not None or self.actors is not None):
            raise UserError("--ray-address and --actors need --engine ray")
        if self.engine == "ray" and self.streams is not None:
            raise UserError("--streams is for the local engine: with --engine ray each actor runs one batch at a "
                            "time (choose how many with --actors)")

    def _normalise(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: values are normalised once, while being made

    # -- views ------------------------------------------------------------------------------------------------
    def mask_record(self) -> dict[str, Any]:
        """The fields that change a mask, as a mask's record holds them. Tiling and the class restriction
        appear only when used, so masks made before they existed stay valid."""
        record: dict[str, Any] = {"scales": list(self.scales), "flip": self.flip, "crf": self.crf,
                                  "max_side": self.max_side}
        if self.tile is not None:
            record.update(tile=self.tile, tile_overlap=round(self.tile_overlap, 6))
        if self.classes is not None:
            record["classes"] = list(self.classes)
        return record

    def as_record(self) -> dict[str, Any]:
        """Every field, JSON-ready (the report's ``settings``)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value
        return out

    @property
    def read_side(self) -> int | None:
        """The size cap images are decoded at: none with tiles (tiles see the image at full resolution)."""
        return None if self.tile is not None else self.max_side

    @property
    def single_pass(self) -> bool:
        return self.scales == (1.0,) and not self.flip

    def replace(self, **changes: Any) -> "LabelSettings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, settings: "LabelSettings | None" = None, **fields: Any) -> "LabelSettings":
        """``settings`` itself, or settings made of ``fields`` (the shorthand ``Labeler(model, flip=True)``);
        not both."""
        if settings is None:
            return cls(**fields)
        if not isinstance(settings, cls):
            raise UserError(f"settings must be a LabelSettings, got {type(settings).__name__}")
        if fields:
            raise UserError(f"give either a LabelSettings or its fields ({', '.join(sorted(fields))}), not both")
        return settings


def check_for_model(settings: LabelSettings, info: ModelInfo) -> tuple[int, ...] | None:
    """The checks that need the model's metadata; returns the label values ``classes`` keeps (None: all)."""
    if settings.half and info.precision != "float16":
        raise UserError(f"this file computes in {info.precision}: export it with `aesipe-export --half` for float16")
    test_time = info.output.get("test_time")
    if test_time and not settings.single_pass:
        raise UserError(f"this pseudo-labeller runs its run's test-time scales {test_time['scales']} "
                        f"{'with' if test_time['flip'] else 'without'} flip inside the graph; re-export it with "
                        "`aesipe-export --what pseudo-labeller --scales ... --flip/--no-flip` to change them")
    if settings.tile is not None and info.needs_tags:
        raise UserError("--tile is for segmenters: a pseudo-labeller's maps are max-normalised over the whole "
                        "image, so tiles would change its rule (it runs unpadded at any size: drop --tile)")
    if settings.classes is None:
        return None
    if info.needs_tags:
        raise UserError("--classes is for segmenters: a pseudo-labeller labels only the classes of each image's "
                        "tags (edit the --tags CSV instead)")
    known = list(info.classes[1:])
    keep = set()
    for name in settings.classes:
        if name == info.classes[0]:
            continue  # the background is always kept
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"--classes: unknown class {name!r}{hint}; the model knows {', '.join(known)}")
        keep.add(known.index(name) + 1)
    if not keep:
        raise UserError("--classes names no class of the model: give at least one of " + ", ".join(known))
    return tuple(sorted(keep))


def field_doc(name: str) -> str:
    """A field's one-line description (the CLI's help texts start from it)."""
    return {f.name: f.metadata["doc"] for f in dataclasses.fields(LabelSettings)}[name]


DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(LabelSettings)}
"""Each field's default (the CLI's flags take theirs from here)."""


# -- checks shared with the model-dependent ones ----------------------------------------------------------------
def check_scales(values: Iterable[float] | str, what: str) -> tuple[float, ...]:
    """Positive finite numbers, at least one (text is read by the one command-line rule, ``parse_scales``)."""
    if isinstance(values, str):
        from aesipe.utils.cli import parse_scales

        return parse_scales(values, what)
    try:
        scales = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be numbers like 1.0,0.75, got {values!r}") from None
    if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
        raise UserError(f"{what} must be positive numbers, got {values!r}")
    return scales


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """``png,coco`` (or a list of such) -> the formats in a fixed order; ``png`` (the masks) is always made."""
    items = [text] if isinstance(text, str) else list(text)
    parts = [p.strip().lower() for item in items for p in str(item).split(",")]
    unknown = [p for p in parts if p and p not in FORMATS]
    if unknown:
        raise UserError(f"--format must be {', '.join(FORMATS[:-1])} or {FORMATS[-1]} (comma-separated for several), "
                        f"got {unknown[0]!r}")
    return tuple(f for f in FORMATS if f in parts or f == "png")


def _check_tile(tile: int | None, overlap: float | None) -> float | None:
    """The overlap to use (None without tiling)."""
    if tile is None:
        if overlap is not None:
            raise UserError("--tile-overlap needs --tile SIZE")
        return None
    if not isinstance(tile, int) or tile < MIN_TILE:
        raise UserError(f"--tile must be at least {MIN_TILE} pixels, got {tile}")
    overlap = DEFAULT_TILE_OVERLAP if overlap is None else float(overlap)
    if not 0.0 <= overlap <= MAX_TILE_OVERLAP:
        raise UserError(f"--tile-overlap must lie in [0, {MAX_TILE_OVERLAP}] (a fraction of the tile), got {overlap:g}")
    return overlap


def _parse_classes(classes: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if classes is None:
        return None
    names = classes.split(",") if isinstance(classes, str) else list(classes)
    kept = tuple(sorted({str(c).strip() for c in names if str(c).strip()}))
    if not kept:
        raise UserError("--classes needs class names, e.g. --classes cat,dog")
    return kept
