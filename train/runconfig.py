"""Resolve the config of a run directory (saved config <- recipe <- dotted overrides) and save it.

A run directory remembers its config, so later stages and resumed runs need nothing retyped; a recipe or
override given now changes it (the pipeline's manifest notices and re-runs what depends on the changed
sections). Two rules keep the directory consistent: a config whose architecture does not fit the run's
existing checkpoints is refused before anything is written, and a stage saves the config only when it
starts real work (``save_run_config``), not when a command merely parses its arguments.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from aesipe.config import RunConfig, load_config, save_config
from aesipe.config.schema import read_run_config
from aesipe.utils.errors import UserError

CONFIG_NAME = "config.toml"
# Per stage folder: the fields that define the architecture its checkpoints hold.
ARCHITECTURE_FIELDS = {
    "stage1": ("model.backbone", "model.no_pretrained"),
    "irn": ("irn.backbone",),
    "seg": ("seg.backbone",),
}


def _value(cfg: RunConfig, dotted: str):
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def _has_checkpoints(stage_dir: Path) -> bool:
    return (stage_dir / "final.pt").is_file() or (stage_dir / "checkpoints" / "last.pt").is_file()


def check_compatible(cfg: RunConfig, trained: RunConfig) -> None:
    """Refuse ``cfg`` if it changes the architecture of a stage that already has checkpoints."""
    run_dir = Path(cfg.run_dir)
    for stage, names in ARCHITECTURE_FIELDS.items():
        if not _has_checkpoints(run_dir / stage):
            continue
        for dotted in names:
            old, new = _value(trained, dotted), _value(cfg, dotted)
            if old != new:
                raise UserError(
                    f"{run_dir / stage} holds checkpoints trained with {dotted}={old}; {dotted}={new} would not fit "
                    f"them: use another run directory, or remove {run_dir / stage} to retrain"
                )


def resolve_run_config(
    run_dir: str | Path,
    recipe: str | Path | None = None,
    overrides: Iterable[str] = (),
    save: bool = False,
) -> RunConfig:
    """The config a stage runs with (``save``: also write it, for callers that start work at once)."""
    from aesipe.config import to_dict

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"RUN_DIR {run_dir} is a file: give the run's folder (it is created if missing)")
    saved = run_dir / CONFIG_NAME
    previous = read_run_config(saved) if saved.is_file() else None
    base = to_dict(previous) if previous is not None else {}
    base["run_dir"] = str(run_dir)
    cfg = load_config(RunConfig, recipe, list(overrides), base=base)
    if previous is not None:
        check_compatible(cfg, previous)
    if save:
        save_run_config(cfg)
    return cfg


def save_run_config(cfg: RunConfig) -> Path:
    """Write ``<run>/config.toml`` (a stage calls this when it starts real work); refuses an incompatible one."""
    run_dir = Path(cfg.run_dir)
    saved = run_dir / CONFIG_NAME
    if saved.is_file():
        check_compatible(cfg, read_run_config(saved))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, saved)
    return saved
