"""What older aesipe versions wrote, in today's layout (used when reading saved configs, recipes and overrides).

aesipe 0.1 had one ``device`` (and ``amp``) per training section; they are ``runtime``'s now. Fields added
since 0.1 mean, in a config 0.1 saved (which does not contain them), what 0.1 did.
"""
from __future__ import annotations

from typing import Any

from .loading import ConfigError

SCHEMA_VERSION = 2
"""Layout version written into every saved config. 1 = aesipe 0.1 (no ``schema`` key)."""

MOVED_KEYS: dict[str, str] = {
    f"{section}.{name}": f"runtime.{name}"
    for section in ("train", "irn", "seg", "random_walk")
    for name in (("device",) if section == "random_walk" else ("device", "amp"))
}
"""Keys of aesipe 0.1 and where they live now: the per-stage devices and AMP flags became ``runtime``'s."""

ADDED_SINCE_0_1: dict[str, Any] = {
    "model.freeze_bn_affine": True, "model.mask_ae_seeds": True, "model.ae_align_corners": False,
    "seg.reference_optimizer": False, "cam.pamr": "off",
    "cam.crf": False, "cam.zero_map_fallback": False, "random_walk.scale_background": False,
    "train.average_last": 0.0, "irn.average_last": 0.0, "seg.average_last": 0.0,
}
"""Fields aesipe 0.1 did not have, with the value that means what 0.1 did: a saved 0.1 config (which
does not write them) gets these, since its checkpoints were trained that way."""


_RUNTIME_DEFAULTS = {"device": "auto", "amp": "true"}


def move_legacy_keys(data: dict[str, Any], source: str = "config", strict: bool = True) -> dict[str, Any]:
    """Move aesipe 0.1's keys (``train.device`` ...) to ``runtime``. Values other than the default must
    agree (``strict``; a saved config takes the first stage's instead, as that is what it was trained on)."""
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    found: dict[str, list[tuple[str, Any]]] = {}
    for old, new in MOVED_KEYS.items():
        section, name = old.split(".")
        if isinstance(out.get(section), dict) and name in out[section]:
            found.setdefault(new, []).append((old, out[section].pop(name)))
    for new, items in found.items():
        section, name = new.split(".")
        runtime = out.setdefault(section, {})
        chosen = [(key, value) for key, value in items if str(value).lower() != _RUNTIME_DEFAULTS[name]]
        if name in runtime:
            chosen.insert(0, (new, runtime[name]))
        if strict:
            differing = {str(value).lower() for _, value in chosen}
            if len(differing) > 1:
                listed = ", ".join(f"{key}={value!r}" for key, value in chosen)
                raise ConfigError(f"{new} is set to different values in {source}: {listed} (it is now set once)")
        if chosen:
            runtime[name] = chosen[0][1]
    return out


def upgrade_saved(data: dict[str, Any]) -> dict[str, Any]:
    """A config as an older aesipe saved it (config.toml, checkpoint["config"]) in today's layout."""
    data = move_legacy_keys(data, "a saved config", strict=False)
    if int(data.get("schema", 1)) < 2:
        for dotted, value in ADDED_SINCE_0_1.items():
            section, name = dotted.split(".")
            data.setdefault(section, {}).setdefault(name, value)
        data["schema"] = SCHEMA_VERSION
    return data
