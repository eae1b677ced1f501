"""The embeddable API: ``Labeler``, one model for many images.

    from aesipe.infer import Labeler
    labeler = Labeler("segmenter.onnx")
    labels = labeler.label("photo.jpg")          # uint8 H x W class indices at the photo's size
    labeler.info.classes[labels[0, 0]]            # class name of the top-left pixel

numpy + Pillow + OpenCV + ONNX Runtime only (TorchScript files import torch lazily). A pseudo-labeller's
maps become labels by the rule of ``aesipe.pseudo_labels`` -- the same code as the training run's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from aesipe import crf as crf_ops
from aesipe import pseudo_labels as rule
from aesipe.config import CrfConfig
from aesipe.utils.errors import UserError

from . import postprocess
from .io import DEFAULT_MAX_SIDE, DecodedImage, ImageReadError, read_image
from .session import open_backend


@dataclass
class Prepared:
    """One image made ready for the graph (built in a worker thread)."""

    decoded: DecodedImage
    tags: np.ndarray | None
    variants: list[tuple[float, bool, np.ndarray]] = field(default_factory=list)
    """(scale, flipped, padded float32 [3, Hp, Wp]) per test-time variant; the first is (1.0, False)."""

    @property
    def shape_key(self) -> tuple:
        return tuple(v[2].shape for v in self.variants)


class Labeler:
    """Label images with an exported model; everything it needs comes from the file's metadata."""

    def __init__(self, model_path: str | Path, device: str = "auto", providers: Sequence[str] | None = None,
                 half: bool = False, scales: Sequence[float] = (1.0,), flip: bool = False, crf: bool = False,
                 max_side: int | None = DEFAULT_MAX_SIDE, threads: int | None = None):
        scales = tuple(float(s) for s in scales)
        if not scales or any(s <= 0 for s in scales):
            raise UserError(f"scales must be positive numbers, got {scales}")
        self.backend = open_backend(model_path, device=device, providers=providers, threads=threads)
        self.info = self.backend.info
        if half and self.info.precision != "float16":
            raise UserError("this file computes in float32: export it with `aesipe-export --half` for float16")
        if crf and not crf_ops.crf_available():
            raise UserError(f"--crf needs pydensecrf: {crf_ops.INSTALL_HINT}")
        self.graph_test_time = self.info.output.get("test_time")
        """A pseudo-labeller's in-graph test-time procedure (its run's scales, flip, PAMR), or None."""
        if self.graph_test_time and (scales != (1.0,) or flip):
            run = self.graph_test_time
            raise UserError(f"this pseudo-labeller runs its run's test-time scales {run['scales']} "
                            f"{'with' if run['flip'] else 'without'} flip inside the graph; re-export it with "
                            "`aesipe-export --what pseudo-labeller --scales ... --flip/--no-flip` to change them")
        self.scales, self.flip, self.crf, self.max_side = scales, flip, crf, max_side
        self.crf_config = CrfConfig()
        self.fmt = self.info.input_format
        self.palette = np.array(self.info.palette, dtype=np.uint8).reshape(-1, 3)

    @property
    def providers(self) -> list[str]:
        return list(self.backend.providers)

    @property
    def fallback(self) -> str | None:
        return self.backend.fallback

    @property
    def single_pass(self) -> bool:
        return self.scales == (1.0,) and not self.flip

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
    def _to_input(self, rgb: np.ndarray) -> np.ndarray:
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

    def prepare(self, decoded: DecodedImage, tags: np.ndarray | None) -> Prepared:
        item = Prepared(decoded, tags)
        height, width = decoded.rgb.shape[:2]
        for scale in self.scales:
            rgb = decoded.rgb
            if scale != 1.0:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
            item.variants.append((scale, False, self._to_input(rgb)))
            if self.flip:
                item.variants.append((scale, True, self._to_input(np.ascontiguousarray(rgb[:, ::-1]))))
        return item

    def needs_scores(self, item: Prepared) -> bool:
        # The graph's own labels are the final ones only for one pass at full size without a CRF (for a
        # pseudo-labeller they mirror aesipe.pseudo_labels; a file of aesipe 0.1 normalised per pass).
        legacy_pseudo = self.info.needs_tags and not self.graph_test_time
        return (not self.single_pass or self.crf or legacy_pseudo
                or item.decoded.rgb.shape[:2] != item.decoded.original_size)

    # -- inference (call from one thread) -----------------------------------------------------------
    def run_batch(self, items: list[Prepared]) -> list[list[np.ndarray]]:
        """Run items whose variants share shapes; per item, its outputs cropped to their variant's size."""
        want = "scores" if any(self.needs_scores(i) for i in items) else "labels"
        per_item: list[list[np.ndarray]] = [[] for _ in items]
        for v in range(len(items[0].variants)):
            batch = np.stack([item.variants[v][2] for item in items])
            tags = np.stack([item.tags for item in items]) if self.info.needs_tags else None
            out = self.backend.run(batch, tags, (want,))[want]
            for i, item in enumerate(items):
                scale, _, _ = item.variants[v]
                h, w = _scaled_size(item.decoded.rgb.shape[:2], scale)
                per_item[i].append(out[i, ..., :h, :w])
        return per_item

    # -- post-processing (thread-safe) --------------------------------------------------------------
    def finish(self, item: Prepared, outputs: list[np.ndarray]) -> np.ndarray:
        """Model outputs of one image -> uint8 label map at the image's original size."""
        height, width = item.decoded.original_size
        if outputs[0].ndim == 2:  # labels fetched directly: single pass at full size, no CRF
            return np.ascontiguousarray(outputs[0], dtype=np.uint8)
        rgb = item.decoded.rgb
        work_h, work_w = rgb.shape[:2]
        maps = []
        for (_, flipped, _), scores in zip(item.variants, outputs):
            scores = scores[..., ::-1] if flipped else scores
            maps.append(postprocess.resize_bilinear(scores, work_h, work_w))
        if self.info.needs_tags:
            classes, kept = rule.keep_image_classes(rule.fuse(maps), item.tags)
            if self.crf:
                labels = crf_ops.label_crf(rgb, kept, classes, self.crf_config, self.info.background_scale)
                return postprocess.resize_labels_nearest(labels.astype(np.uint8), height, width)
            index = postprocess.argmax_resized(rule.scale_background(kept, self.info.background_scale), height, width)
            return classes.astype(np.uint8)[index]
        logits = np.sum(np.stack(maps), axis=0, dtype=np.float32)
        if self.crf:
            labels = crf_ops.crf_from_probabilities(rgb, postprocess.softmax(logits), self.crf_config)
            return postprocess.resize_labels_nearest(labels.astype(np.uint8), height, width)
        return postprocess.argmax_resized(logits, height, width)

    # -- convenience ----------------------------------------------------------------------------------
    def label(self, image: np.ndarray | str | Path, tags: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
        """Label one image (uint8 H x W x 3 RGB array, H x W grayscale, or a path): uint8 H x W."""
        if isinstance(image, (str, Path)):
            try:
                decoded = read_image(Path(image), self.max_side)
            except ImageReadError as exc:
                raise UserError(f"cannot label {image}: {exc}") from None
        else:
            rgb = np.asarray(image)
            if rgb.ndim == 2:
                rgb = np.repeat(rgb[..., None], 3, axis=2)
            if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
                raise UserError("image must be uint8 H x W x 3 RGB (or H x W gray, or RGBA)")
            decoded = DecodedImage(np.ascontiguousarray(rgb[..., :3]), rgb.shape[:2])
        item = self.prepare(decoded, self.tags_vector(tags))
        return self.finish(item, self.run_batch([item])[0])


def _scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    height, width = size
    if scale == 1.0:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))
