"""Manifests written by aesipe 0.1: their stage keys hashed the config in 0.1's layout.

When the config of a run upgraded from 0.1 (``aesipe.config.schema.upgrade_saved``) still means what 0.1
ran, its 0.1 keys are recomputed from it and the records are adopted under today's keys, so upgrading
aesipe never redoes (and never deletes) finished stages. Any setting 0.1 could not express makes the
keys differ, and the pipeline then redoes what depends on it, as for any other change.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aesipe.config import SCHEMA_VERSION, RunConfig, to_dict
from aesipe.config.legacy import ADDED_SINCE_0_1, MOVED_KEYS

# 0.1's own section lists of the stages whose lists changed (the others are the same today).
_LEGACY_DATA_FIELDS = ("data.root", "data.kind", "data.train_split", "data.labels_csv")
_LEGACY_SEG_FIELDS = tuple(f"seg.{name}" for name in (
    "backbone", "pretrained", "no_pretrained", "freeze_bn", "label_source", "train_split", "crop_size", "scale_range",
    "color_jitter", "batch_size", "epochs", "max_steps", "lr", "head_lr_mult", "momentum", "weight_decay",
    "poly_power", "seed", "amp"))
LEGACY_SECTIONS = {"train": _LEGACY_DATA_FIELDS + ("model", "train"), "irn": ("irn",), "seg": _LEGACY_SEG_FIELDS,
                   "make-cam": ("data.cam_split", "seg.train_split", "cam.scales", "cam.flip", "cam.map"),
                   "eval-cam": ("cam.background_scale", "cam.sweep"), "ir-label": ("crf", "ir_label"),
                   "make-seg-labels": ("random_walk",)}


def legacy_view(cfg: RunConfig) -> SimpleNamespace | None:
    """``cfg`` as 0.1's config sections (plain dicts), or None if 0.1 could not have made it."""
    data = to_dict(cfg)
    for dotted, value in ADDED_SINCE_0_1.items():
        section, name = dotted.split(".")
        if data[section].pop(name) != value:
            return None
    runtime = data.pop("runtime")
    for old, new in MOVED_KEYS.items():
        section, name = old.split(".")
        data[section][name] = runtime[new.split(".")[1]]
    data.pop("schema")
    return SimpleNamespace(**{k: v for k, v in data.items() if isinstance(v, dict)})


def adopt_legacy_records(records: dict[str, Any], cfg: RunConfig, hashes: dict[str, dict[str, Any]]) -> int:
    """Re-key, in place, the records 0.1 wrote for this very config (see the module docstring); returns
    how many were adopted."""
    if all("schema" in record for record in records.values()):
        return 0
    view = legacy_view(cfg)
    if view is None:
        return 0
    from .pipeline import stage_hashes

    legacy = stage_hashes(view, LEGACY_SECTIONS)
    adopted = 0
    for name, record in records.items():
        if "schema" not in record and name in legacy and record.get("key") == legacy[name]["key"]:
            record.update(hashes[name], schema=SCHEMA_VERSION)
            adopted += 1
    return adopted
