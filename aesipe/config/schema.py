"""The run configuration: one frozen dataclass per section, defaults = the authors' effective recipe.

Every switch of ``docs/method.md`` is a field here, so each row of the paper's Tables 2 and 3 is one config
(see ``configs/``). Load with ``aesipe.config.load_config(RunConfig, recipe, overrides)``; the resolved
config is written to ``<run>/config.toml`` and stored inside every checkpoint, and read back with
``run_config_from_saved`` (which upgrades what older versions wrote). Stdlib only: the torch-free
labelling side may import it.

The three training stages share one section type, ``SolverConfig`` (optimiser, schedule, seed,
checkpointing); where and how they run (device, mixed precision) is set once, in ``runtime``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .legacy import MOVED_KEYS, SCHEMA_VERSION, move_legacy_keys, upgrade_saved
from .loading import ConfigError, from_dict
from .sections import CamConfig, CrfConfig, DataConfig, ModelConfig, RuntimeConfig, SolverConfig, TrainConfig
from .sections_refine import IrLabelConfig, IrnConfig, RandomWalkConfig, SegConfig
from .sections_review import CorrectionsConfig

__all__ = ["CamConfig", "CorrectionsConfig", "CrfConfig", "DataConfig", "IrLabelConfig", "IrnConfig", "ModelConfig", "RandomWalkConfig",
           "RunConfig", "RuntimeConfig", "SegConfig", "SolverConfig", "TrainConfig", "PAPER_LR", "REFERENCE_LR",
           "RUNTIME_ONLY_FIELDS",
           "SCHEMA_VERSION", "read_run_config", "run_config_from_saved"]

RUNTIME_ONLY_FIELDS = frozenset({"workers", "device", "log_every", "checkpoint_every"})
"""Fields (of any section) that change how fast or where a stage runs, never what it makes: the pipeline's
manifest does not redo a stage for them."""
PAPER_LR = 0.01
"""Backbone lr of the paper (new layers x10) with momentum 0.9: about the effective step of the code."""
REFERENCE_LR = 0.1
"""Backbone lr of the authors' code, which trains with momentum 1e-4 (see ``reference_optimizer``)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a run directory was made with (``<run>/config.toml``)."""

    __config_aliases__: ClassVar[dict[str, str]] = MOVED_KEYS
    __config_upgrade__: ClassVar = staticmethod(move_legacy_keys)

    run_dir: str = "runs/default"
    """The run directory (set from the command line: RUN_DIR)."""
    schema: int = SCHEMA_VERSION
    """Config layout version (written by this aesipe; saved configs without it are aesipe 0.1's)."""
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    crf: CrfConfig = field(default_factory=CrfConfig)
    ir_label: IrLabelConfig = field(default_factory=IrLabelConfig)
    irn: IrnConfig = field(default_factory=IrnConfig)
    random_walk: RandomWalkConfig = field(default_factory=RandomWalkConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    corrections: CorrectionsConfig = field(default_factory=CorrectionsConfig)


def read_run_config(path) -> RunConfig:
    """A run directory's ``config.toml`` (any aesipe version's); a broken file is one ConfigError line."""
    import tomllib
    from pathlib import Path

    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return run_config_from_saved(data)


def run_config_from_saved(data: dict[str, Any]) -> RunConfig:
    """The ``RunConfig`` a saved config (``config.toml``, ``checkpoint["config"]``) describes, whichever
    aesipe version wrote it."""
    return from_dict(RunConfig, upgrade_saved(data))
