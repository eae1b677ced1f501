"""The embeddable API: ``Labeler``, one model for many images.

    from aesipe.infer import Labeler
    labeler = Labeler("segmenter.onnx")
    labels = labeler.label("photo.jpg")          # uint8 H x W class indices at the photo's size
    labels, probs = labeler.label("photo.jpg", return_scores=True)   # + float32 [1+C, H, W]
    labeler.info.classes[labels[0, 0]]            # class name of the top-left pixel

numpy + Pillow + OpenCV + ONNX Runtime only (TorchScript files import torch lazily). A pseudo-labeller's
maps become labels by the rule of ``aesipe.pseudo_labels`` -- the same code as the training run's.
Confidence (docs/deploy.md): a segmenter's is the softmax probability of the written class (of the test-time
variants' mean logits); a pseudo-labeller's is the winning kept map's share of the kept maps' sum, after the
background scaling. Neither is computed unless asked for.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from aesipe import crf as crf_ops
from aesipe.config import CrfConfig
from aesipe.imaging import DecodedImage, ImageReadError, read_image
from aesipe.utils.errors import UserError

from . import tiling
from .finish import finish
from .items import Labelled, Prepared, ZeroMaps
from .session import open_backend
from .settings import LabelSettings, check_for_model


class Labeler:
    """Label images with an exported model; everything it needs comes from the file's metadata and one
    ``LabelSettings`` (or its fields: ``Labeler("m.onnx", flip=True)``).

    The steps of one image, each public and thread-safe: ``prepare`` (decoded pixels -> the graph's inputs),
    ``run_batch`` (the model; ``streams`` calls at once), ``finish`` (model outputs -> labels at the image's
    size). ``label`` and ``label_many`` chain them."""

    def __init__(self, model_path: str | Path, settings: LabelSettings | None = None, *, parallel_calls: bool = False,
                 **fields):
        """``settings.streams``: sessions on a CPU that run calls at once. Left automatic (None), a Labeler
        has one, so a single caller's calls get every core; ``parallel_calls=True`` (an engine that calls
        ``run_batch`` from several threads) takes ``session.cpu_streams``'s choice instead."""
        self.settings = settings = LabelSettings.of(settings, **fields)
        self.model = open_backend(model_path, device=settings.device, providers=settings.providers,
                                  threads=settings.threads,
                                  streams=settings.streams if settings.streams or parallel_calls else 1)
        """The model file's runner (``session.py``): ``run(image, tags, want)``, ``info``, ``providers``."""
        self.info = self.model.info
        self.keep = check_for_model(settings, self.info)
        """Label values ``settings.classes`` restricts the output to (None: every class)."""
        self.graph_test_time = self.info.output.get("test_time")
        """A pseudo-labeller's in-graph test-time procedure (its run's scales, flip, PAMR), or None."""
        file_crf = self.info.output.get("crf")
        self.crf = bool(settings.crf or file_crf)
        """Labels go through the dense CRF: asked for (``--crf``), or the run's calibration chose it (the file's
        ``output.crf``, with the run's settings: the labels of the run, as make-cam's pseudo-labels were)."""
        if self.crf and not crf_ops.crf_available():
            why = "--crf" if settings.crf else f"{model_path} (its run's calibration chose the label CRF)"
            raise UserError(f"{why} needs pydensecrf: {crf_ops.INSTALL_HINT}")
        self.crf_config = CrfConfig(**{k: v for k, v in file_crf.items() if k != "protocol"}) if file_crf else CrfConfig()
        self.zero_map_output = "fallback" in self.info.output.get("names", ())
        """The file says which tagged classes had an all-zero map (ONNX pseudo-labellers of this aesipe)."""
        self.fmt = self.info.input_format
        self.palette = np.array(self.info.palette, dtype=np.uint8).reshape(-1, 3)

    @property
    def providers(self) -> list[str]:
        return list(self.model.providers)

    @property
    def fallback(self) -> str | None:
        return self.model.fallback

    @property
    def streams(self) -> int:
        """How many ``run_batch`` calls run at once, each on its own session (more callers wait)."""
        return self.model.streams

    # -- tags ---------------------------------------------------------------------------------------
    def tags_vector(self, tags: Sequence[str] | np.ndarray | None) -> np.ndarray | None:
        """Class names or a multi-hot [C] array -> float32 [C]; None for segmenters."""
        if not self.info.needs_tags:
            return None
        if tags is None:
            raise UserError("this pseudo-labeller needs the image's tags (class names; CLI: --tags CSV)")
        if isinstance(tags, np.ndarray):
            if tags.shape != (self.info.num_classes,):
                raise UserError(f"tags must be a multi-hot vector of {self.info.num_classes} classes")
            return tags.astype(np.float32)
        index = {name: i for i, name in enumerate(self.info.classes[1:])}
        vector = np.zeros(self.info.num_classes, dtype=np.float32)
        for name in tags:
            if name not in index:
                raise UserError(f"unknown class {name!r}; the model knows {', '.join(self.info.classes[1:])}")
            vector[index[name]] = 1.0
        return vector

    # -- pre-processing (thread-safe) ---------------------------------------------------------------
    def to_input(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 H x W x 3 RGB -> the graph's float32 [3, Hp, Wp] input (scaled, normalised unless the graph
        does it, padded to the size divisor with the pad colour)."""
        fmt = self.fmt
        height, width = rgb.shape[:2]
        if fmt.fixed_size:
            pad_h, pad_w = fmt.fixed_size  # fixed-size graphs: resized by the caller (scales)
        else:
            div = fmt.size_divisor or 1
            pad_h, pad_w = -(-height // div) * div, -(-width // div) * div
        x = np.empty((3, pad_h, pad_w), dtype=np.float32)
        pad = np.array(fmt.pad_value, dtype=np.float32)
        if not fmt.normalised_in_graph:
            pad = (pad - np.array(fmt.mean, dtype=np.float32)) / np.array(fmt.std, dtype=np.float32)
        x[:] = pad[:, None, None]
        body = rgb.transpose(2, 0, 1).astype(np.float32) * np.float32(fmt.scale)
        if not fmt.normalised_in_graph:
            body = (body - np.array(fmt.mean, np.float32)[:, None, None]) / np.array(fmt.std, np.float32)[:, None, None]
        x[:, :height, :width] = body
        return x

    def prepare(self, decoded: DecodedImage, tags: np.ndarray | None, confidence: bool | None = None,
                probabilities: bool = False) -> Prepared:
        """``confidence`` (default: the settings') / ``probabilities``: ``finish`` returns them too."""
        confidence = self.settings.confidence if confidence is None else confidence
        item = Prepared(decoded, tags, confidence=confidence, probabilities=probabilities)
        if tiling.needs_tiles(self.settings.tile, decoded.rgb.shape[:2]):
            item.tiled = True  # the tiles are cut from the pixels inside run_batch: no full-size float input
            return item
        height, width = decoded.rgb.shape[:2]
        for scale in self.settings.scales:
            rgb = decoded.rgb
            if scale != 1.0:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
            item.variants.append((scale, False, self.to_input(rgb)))
            if self.settings.flip:
                item.variants.append((scale, True, self.to_input(np.ascontiguousarray(rgb[:, ::-1]))))
        return item

    def needs_scores(self, item: Prepared) -> bool:
        # The graph's own labels are the final ones only for one pass at full size without a CRF, a class
        # restriction or a confidence map (for a pseudo-labeller they mirror aesipe.pseudo_labels; a file
        # of aesipe 0.1 normalised per pass).
        legacy_pseudo = self.info.needs_tags and not self.graph_test_time
        return (not self.settings.single_pass or self.crf or legacy_pseudo or self.keep is not None
                or item.confidence or item.probabilities or item.decoded.rgb.shape[:2] != item.decoded.original_size)

    # -- inference (thread-safe; ``streams`` calls run at once) -------------------------------------
    def run_batch(self, items: list[Prepared]) -> list[list]:
        """Run items whose variants share shapes; per item, its outputs cropped to their variant's size
        (a tiled item's output is its finished ``Labelled``: its tiles run here, row by row)."""
        if items[0].tiled:
            return [[tiling.label_tiled(self, item)] for item in items]
        want = "scores" if any(self.needs_scores(i) for i in items) else "labels"
        per_item: list[list[np.ndarray]] = [[] for _ in items]
        for v in range(len(items[0].variants)):
            batch = np.stack([item.variants[v][2] for item in items])
            tags = np.stack([item.tags for item in items]) if self.info.needs_tags else None
            names = (want, "fallback") if self.zero_map_output else (want,)
            results = self.model.run(batch, tags, names)
            out = results[want]
            for i, item in enumerate(items):
                scale, _, _ = item.variants[v]
                h, w = _scaled_size(item.decoded.rgb.shape[:2], scale)
                per_item[i].append(out[i, ..., :h, :w])
        if self.zero_map_output:  # the graph runs every scale inside: one variant, one set of flags
            for i in range(len(items)):
                per_item[i].append(ZeroMaps(np.asarray(results["fallback"][i]).astype(bool)))
        return per_item

    # -- post-processing (thread-safe) --------------------------------------------------------------
    def finish(self, item: Prepared, outputs: list) -> Labelled:
        """Model outputs of one image -> its labels at its original size, with the confidence/probabilities it
        was prepared for."""
        return finish(self, item, outputs)

    # -- convenience ----------------------------------------------------------------------------------
    def decode(self, image: np.ndarray | str | Path) -> DecodedImage:
        if isinstance(image, (str, Path)):
            try:
                return read_image(Path(image), self.settings.read_side)
            except ImageReadError as exc:
                raise UserError(f"cannot label {image}: {exc}") from None
        rgb = np.asarray(image)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
            raise UserError("image must be uint8 H x W x 3 RGB (or H x W gray, or RGBA)")
        return DecodedImage(np.ascontiguousarray(rgb[..., :3]), rgb.shape[:2])

    def label(self, image: np.ndarray | str | Path, tags: Sequence[str] | np.ndarray | None = None,
              return_scores: bool = False):
        """Label one image (uint8 H x W x 3 RGB array, H x W grayscale, or a path): uint8 H x W; with
        ``return_scores``, ``(labels, probabilities float32 [1 + C, H, W])``."""
        return self.label_many([image], None if tags is None else [tags], batch_size=1,
                               return_scores=return_scores)[0]

    def label_many(self, images: Sequence[np.ndarray | str | Path], tags: Sequence | None = None,
                   batch_size: int = 4, return_scores: bool = False) -> list:
        """Label a list of images (``tags``: one entry per image for a pseudo-labeller); same-size images (and
        for a pseudo-labeller same tags) share a model call, ``batch_size`` at a time. Returns what ``label``
        returns, per image, in order."""
        if tags is not None and len(tags) != len(images):
            raise UserError(f"tags must have one entry per image: {len(tags)} for {len(images)} images")
        results: list = [None] * len(images)
        step = max(1, int(batch_size))
        for start in range(0, len(images), step * 4):  # a few batches' worth in memory at a time
            buckets: dict[tuple, list[tuple[int, Prepared]]] = {}
            for i in range(start, min(start + step * 4, len(images))):
                vector = self.tags_vector(None if tags is None else tags[i])
                item = self.prepare(self.decode(images[i]), vector, confidence=False, probabilities=return_scores)
                buckets.setdefault(item.batch_key, []).append((i, item))
            for group in buckets.values():
                for first in range(0, len(group), step):
                    chunk = group[first:first + step]
                    for (i, item), outputs in zip(chunk, self.run_batch([item for _, item in chunk])):
                        done = self.finish(item, outputs)
                        results[i] = (done.labels, done.probabilities) if return_scores else done.labels
        return results


def _scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    height, width = size
    if scale == 1.0:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))
