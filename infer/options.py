"""What the user chose for a labelling job (the flags of ``aesipe-label``, checked when made) and the
``Labeler`` those options ask for."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aesipe.utils.errors import UserError

from . import outputs, tiling
from .api import Labeler
from .io import DEFAULT_MAX_SIDE


@dataclass(frozen=True)
class LabelOptions:
    """What the user chose (the flags of ``aesipe-label``)."""

    tags_csv: Path | None = None
    overlay: bool = False
    crf: bool = False
    batch_size: int = 4
    device: str = "auto"
    half: bool = False
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    overwrite: bool = False
    workers: int | None = None
    max_side: int | None = DEFAULT_MAX_SIDE
    threads: int | None = None
    """ONNX Runtime intra-op threads per stream (default: the cores shared out between the streams)."""
    streams: int | None = None
    """Batches that run at once on a CPU, each on its own ONNX Runtime session (default: a segmenter's 2 on 2+
    cores, a pseudo-labeller's 1; ``session.cpu_streams``)."""
    providers: tuple[str, ...] | None = None
    confidence: bool = False
    formats: tuple[str, ...] = ("png",)
    sheet: bool = False
    tile: int | None = None
    tile_overlap: float | None = None
    """The fraction of a tile its neighbours overlap (default 1/3 with ``tile``)."""
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        if self.workers is not None and self.workers < 1:
            raise UserError("--workers must be at least 1")
        if self.max_side is not None and self.max_side < 16:
            raise UserError("--max-side must be at least 16")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be at least 1")
        if self.streams is not None and self.streams < 1:
            raise UserError("--streams must be at least 1")
        object.__setattr__(self, "formats", outputs.parse_formats(self.formats))
        object.__setattr__(self, "tile_overlap", tiling.check_tile(self.tile, self.tile_overlap))
        if self.classes is not None:
            names = self.classes.split(",") if isinstance(self.classes, str) else self.classes
            object.__setattr__(self, "classes", tuple(sorted({c.strip() for c in names if c.strip()})))
            if not self.classes:
                raise UserError("--classes needs class names, e.g. --classes cat,dog")

    def mask_settings(self) -> dict:
        """The options that change a mask (part of its fingerprint). Tiling and the class restriction appear
        only when used, so masks made before they existed stay valid."""
        settings = {"scales": list(self.scales), "flip": self.flip, "crf": self.crf, "max_side": self.max_side}
        if self.tile is not None:
            settings.update(tile=self.tile, tile_overlap=round(self.tile_overlap, 6))
        if self.classes is not None:
            settings["classes"] = list(self.classes)
        return settings


def labeler_for(model_path: str | Path, o: LabelOptions, device: str | None = None, threads: int | None = None,
                streams: int | None = None) -> Labeler:
    """The Labeler a job's options ask for (any engine: ``device``/``threads``/``streams`` override where and
    how it runs)."""
    return Labeler(model_path, device=device or o.device, providers=o.providers, half=o.half, scales=o.scales,
                   flip=o.flip, crf=o.crf, max_side=o.max_side, threads=threads or o.threads, tile=o.tile,
                   tile_overlap=o.tile_overlap, classes=o.classes, tile_batch=o.batch_size, confidence=o.confidence,
                   streams=streams or o.streams)
