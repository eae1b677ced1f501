"""Resolve the config of a run directory: saved config <- recipe <- dotted overrides, then save it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from aesipe.config import RunConfig, load_config, save_config
from aesipe.config.schema import read_run_config

CONFIG_NAME = "config.toml"


def resolve_run_config(
    run_dir: str | Path,
    recipe: str | Path | None = None,
    overrides: Iterable[str] = (),
    save: bool = True,
) -> RunConfig:
    """The config a stage runs with. A run directory remembers its config, so later stages and
    resumed runs need nothing retyped; a recipe or override given now changes it (the pipeline's
    manifest notices and re-runs what depends on the changed sections)."""
    from aesipe.config import to_dict

    run_dir = Path(run_dir)
    saved = run_dir / CONFIG_NAME
    base = to_dict(read_run_config(saved)) if saved.is_file() else {}
    base["run_dir"] = str(run_dir)
    cfg = load_config(RunConfig, recipe, list(overrides), base=base)
    if save:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, saved)
    return cfg
