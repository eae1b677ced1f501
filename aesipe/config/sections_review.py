"""Config section of the review loop: where a run's reviewed masks (``<run>/corrections/``) replace its own labels."""
from __future__ import annotations

from dataclasses import dataclass

from .checks import at_least


@dataclass(frozen=True)
class CorrectionsConfig:
    """Reviewed masks imported with ``aesipe-train corrections`` (docs/review.md). The segmenter always trains
    on a corrected image's mask instead of its pseudo-label; stage 1 stays tag-trained (the method)."""

    seg_repeat: int = 1
    """seg: each corrected image is drawn this many times per epoch (1: as often as every other image)."""
    ir_labels: bool = True
    """ir-label: a corrected image's IR label is its mask (certain foreground and background, exact
    boundaries; void stays unsure) instead of the two CRFs' agreement."""
    calibrate: bool = True
    """calibrate: judge the background scale on the corrected images too (their mask replaces the dataset's)."""

    def __post_init__(self) -> None:
        at_least(self, 1, "seg_repeat")
