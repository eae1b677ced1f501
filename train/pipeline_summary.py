"""What a pipeline run reports at its end: the mIoU each evaluation stage recorded, and a warning for each stage
whose pseudo-labels came out worse than the ones it was given (read from the run's manifest)."""
from __future__ import annotations

from typing import Any

from .pipeline import STAGES


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """The mIoU the evaluation stages recorded, in pipeline order, and a warning for each stage whose output
    is worse than its input on the same images."""
    lines = []
    for stage in STAGES:
        metrics = manifest["stages"].get(stage.name, {}).get("metrics")
        if metrics and metrics.get("miou") is not None:
            lines.append(f"{stage.title:<28} mIoU {100 * metrics['miou']:5.1f}%  ({metrics['split']})")
    return lines + regression_lines(manifest)


def regression_lines(manifest: dict[str, Any]) -> list[str]:
    """"worse than its input" lines: IRN's random-walk labels against the stage-1 labels they were made from,
    and the segmenter against the random-walk labels it learned from (both judged on the same split)."""
    def metric(name: str, key: str = "miou", split_key: str = "split") -> tuple[float, str] | None:
        metrics = manifest["stages"].get(name, {}).get("metrics") or {}
        return (metrics[key], metrics[split_key]) if metrics.get(key) is not None else None

    pairs = (("random-walk pseudo-labels (IRN)", metric("eval-seg-labels"), "stage-1 pseudo-labels they were made from",
              metric("eval-cam")),
             ("DeepLabV3", metric("eval-seg", "miou_on_labels_split", "labels_split"),
              "random-walk pseudo-labels it was trained on", metric("eval-seg-labels")))
    lines = []
    for what, output, source, given in pairs:
        if output and given and output[1] == given[1] and output[0] < given[0]:
            lines.append(f"! {what} {100 * output[0]:.1f}% on {output[1]} are "
                         f"{100 * (given[0] - output[0]):.1f} points below the {source} ({100 * given[0]:.1f}%): "
                         "this stage made the pseudo-labels worse")
    return lines
