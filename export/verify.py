"""Parity: run the exported file (through the same backend aesipe-label uses) against eager PyTorch.

Sample inputs: batch 2 at two sizes, one of them non-square and odd, smooth random images (more like
photos than white noise) and, for the pseudo-labeller, random tags with at least one class each.
Pass criteria: max |scores difference| <= tol * max(1, max |reference scores|) (fp32: 1e-3, fp16: 2e-2),
and label agreement >= 99.9% over pixels whose top-2 reference margin exceeds that tolerance (where the
two best classes are closer than the numeric tolerance, either answer is right).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aesipe.pseudo_labels import max_normalise, scale_background

SAMPLE_SIZES = ((64, 96), (77, 59))
TOLERANCE = {"float32": 1e-3, "float16": 2e-2}
MIN_AGREEMENT = 0.999


@dataclass(frozen=True)
class ParityResult:
    max_abs_diff: float
    relative_diff: float
    label_agreement: float
    tolerance: float
    sizes: tuple[tuple[int, int], ...]

    @property
    def ok(self) -> bool:
        return self.relative_diff <= self.tolerance and self.label_agreement >= MIN_AGREEMENT

    def summary(self) -> str:
        sizes = ", ".join(f"2x3x{h}x{w}" for h, w in self.sizes)
        return (f"parity on {sizes}: max |diff| {self.max_abs_diff:.3g} (relative {self.relative_diff:.3g}, "
                f"tolerance {self.tolerance:g}), label agreement {100 * self.label_agreement:.3f}%")


def sample_inputs(height: int, width: int, num_classes: int | None, seed: int = 0):
    """Smooth random RGB images in [0, 1] (batch 2) and, if ``num_classes``, multi-hot tags [2, C]."""
    generator = torch.Generator().manual_seed(seed + height * 1000 + width)
    coarse = torch.rand(2, 3, max(2, height // 8), max(2, width // 8), generator=generator)
    image = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    image = (image + 0.05 * torch.rand(2, 3, height, width, generator=generator)).clamp(0, 1)
    if num_classes is None:
        return (image,)
    tags = (torch.rand(2, num_classes, generator=generator) < 0.4).float()
    tags[torch.arange(2), torch.randint(num_classes, (2,), generator=generator)] = 1.0
    return image, tags


def check_parity(backend, reference: torch.nn.Module, num_classes: int | None, precision: str) -> ParityResult:
    """Compare ``backend`` (an aesipe.infer.session backend) with the eager ``reference`` graph."""
    tol = TOLERANCE[precision]
    worst_abs, worst_rel, agree, decided = 0.0, 0.0, 0, 0
    for height, width in SAMPLE_SIZES:
        inputs = sample_inputs(height, width, num_classes)
        with torch.no_grad():
            ref_scores = reference(*inputs)[0]
        ref = ref_scores.float().numpy()
        out = backend.run(inputs[0].numpy(), inputs[1].numpy() if len(inputs) > 1 else None, ("scores", "labels"))
        if out["scores"].shape != ref.shape:
            raise AssertionError(f"exported scores have shape {out['scores'].shape}, PyTorch {ref.shape}")
        diff = float(np.abs(out["scores"].astype(np.float32) - ref).max())
        worst_abs = max(worst_abs, diff)
        scale = max(1.0, float(np.abs(ref).max()))
        worst_rel = max(worst_rel, diff / scale)
        weighted = _label_scores(reference, ref)
        top2 = np.sort(weighted, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > tol * max(1.0, float(np.abs(weighted).max()))
        agree += int((out["labels"] == weighted.argmax(axis=1))[clear].sum())
        decided += int(clear.sum())
    return ParityResult(worst_abs, worst_rel, agree / decided if decided else 1.0, tol, SAMPLE_SIZES)


def _label_scores(reference: torch.nn.Module, scores: np.ndarray) -> np.ndarray:
    """The scores the graph's ``labels`` output is the argmax of: a segmenter's logits, or for a
    pseudo-labeller the maps after the pseudo-label rule (max-normalised, background x scale)."""
    weight = getattr(reference, "background_weight", None)
    if weight is None:
        return scores
    return scale_background(max_normalise(scores), float(weight[0]))


def verify_file(path: Path, reference: torch.nn.Module, num_classes: int | None, precision: str) -> ParityResult:
    from aesipe.infer.session import open_backend

    backend = open_backend(path, device="cpu", providers=None, threads=None, streams=1)
    return check_parity(backend, reference, num_classes, precision)
