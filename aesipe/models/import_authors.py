"""Map the authors' SIPE / AE-SIPE checkpoints (``{'net': state_dict}``) to ``AESIPENet`` keys.

The authors' ``Net`` registers every backbone module under several names (``resnet50.layer1``,
``stage1.0`` and ``backbone.1.0``; ``classifier`` and ``newly_added.0``), so its state_dict holds each
tensor up to three times. Every alias is mapped; aliases of one target must agree, and keys that map
nowhere are reported, never dropped silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from aesipe.checkpoint_format import load_torch_file
from aesipe.utils.errors import UserError

# authors' prefix -> our prefix (longest match wins)
_PREFIXES = {
    "resnet50.conv1.": "backbone.stages.0.0.",
    "resnet50.bn1.": "backbone.stages.0.1.",
    "resnet50.layer1.": "backbone.stages.0.4.",
    "resnet50.layer2.": "backbone.stages.1.",
    "resnet50.layer3.": "backbone.stages.2.",
    "resnet50.layer4.": "backbone.stages.3.",
    "stage0.0.": "backbone.stages.0.0.",
    "stage0.1.": "backbone.stages.0.1.",
    "stage1.0.": "backbone.stages.0.4.",
    "stage2.0.": "backbone.stages.1.",
    "stage3.0.": "backbone.stages.2.",
    "stage4.0.": "backbone.stages.3.",
    "backbone.0.0.": "backbone.stages.0.0.",
    "backbone.0.1.": "backbone.stages.0.1.",
    "backbone.1.0.": "backbone.stages.0.4.",
    "backbone.2.0.": "backbone.stages.1.",
    "backbone.3.0.": "backbone.stages.2.",
    "backbone.4.0.": "backbone.stages.3.",
    "classifier.": "classifier.",
    "newly_added.0.": "classifier.",
    **{f"side{i}.": f"side.{i - 1}." for i in range(1, 5)},
    **{f"newly_added.{i}.": f"side.{i - 1}." for i in range(1, 5)},
}
_WRAPPERS = ("module.",)  # DataParallel / DDP


@dataclass
class ImportReport:
    state_dict: dict[str, torch.Tensor]
    backbone: str
    num_classes: int
    unmatched: list[str] = field(default_factory=list)
    """Authors' keys that map to nothing in our network."""
    missing: list[str] = field(default_factory=list)
    """Our keys the file did not provide."""
    aliases: int = 0
    """Duplicate keys (the same tensor under another module name) that were checked and merged."""

    def summary(self) -> str:
        lines = [
            f"backbone {self.backbone}, {self.num_classes} foreground classes, "
            f"{len(self.state_dict)} tensors imported ({self.aliases} duplicate aliases merged)"
        ]
        if self.unmatched:
            lines.append(f"{len(self.unmatched)} keys of the file were not used: {', '.join(self.unmatched[:8])}"
                         + (" ..." if len(self.unmatched) > 8 else ""))
        if self.missing:
            lines.append(f"{len(self.missing)} keys of the network are missing: {', '.join(self.missing[:8])}"
                         + (" ..." if len(self.missing) > 8 else ""))
        return "\n".join(lines)


def read_authors_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    raw = load_torch_file(path, "checkpoint")
    if isinstance(raw, dict) and isinstance(raw.get("net"), dict):
        raw = raw["net"]
    elif isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise UserError(f"{path} does not hold a state_dict (expected the authors' {{'net': state_dict}})")
    return raw


def _rename(key: str) -> str | None:
    for wrapper in _WRAPPERS:
        if key.startswith(wrapper):
            key = key[len(wrapper):]
    prefix = max((p for p in _PREFIXES if key.startswith(p)), key=len, default=None)
    return None if prefix is None else _PREFIXES[prefix] + key[len(prefix):]


def detect_backbone(state_dict: dict[str, torch.Tensor]) -> str:
    """ResNet-50 has 6 bottlenecks in layer3, ResNet-101 has 23."""
    blocks = {k.split(".")[3] for k in state_dict if k.startswith("backbone.stages.2.") and k.count(".") > 4}
    if len(blocks) == 6:
        return "resnet50"
    if len(blocks) == 23:
        return "resnet101"
    raise UserError(f"cannot tell the backbone: layer3 has {len(blocks)} blocks (ResNet-50: 6, ResNet-101: 23)")


def convert_authors_state_dict(raw: dict[str, torch.Tensor]) -> ImportReport:
    """Rename every key; fail on conflicting aliases. ``missing`` is filled by ``check_against``."""
    out: dict[str, torch.Tensor] = {}
    unmatched, aliases = [], 0
    for key, value in raw.items():
        if key.endswith("num_batches_tracked"):
            continue  # BatchNorm bookkeeping; our frozen BN has none
        target = _rename(key)
        if target is None:
            unmatched.append(key)
            continue
        if target in out:
            if out[target].shape != value.shape or not torch.equal(out[target], value):
                raise UserError(f"the file holds two different tensors for {target} (one is {key})", 1)
            aliases += 1
            continue
        out[target] = value
    if "classifier.weight" not in out:
        raise UserError("no classifier weight (classifier.weight) in the file: not a SIPE/AE-SIPE checkpoint")
    report = ImportReport(out, detect_backbone(out), int(out["classifier.weight"].shape[0]), unmatched, aliases=aliases)
    return report


def check_against(report: ImportReport, model: torch.nn.Module) -> ImportReport:
    """Fill ``missing`` and fail (one line) on shape mismatches or missing keys."""
    expected = model.state_dict()
    report.missing = sorted(set(expected) - set(report.state_dict))
    extra = sorted(set(report.state_dict) - set(expected))
    report.unmatched.extend(extra)
    for key in extra:
        report.state_dict.pop(key)
    wrong = [k for k, v in report.state_dict.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise UserError(f"{len(wrong)} tensors have the wrong shape, e.g. {k}: file {tuple(report.state_dict[k].shape)}, "
                        f"network {tuple(expected[k].shape)}", 1)
    if report.missing:
        raise UserError(report.summary(), 1)
    return report
