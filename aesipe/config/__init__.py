"""Configuration: the run schema (``RunConfig`` and its sections) and the machinery that loads it.

``load_config(RunConfig, recipe, overrides)`` resolves defaults <- recipe file <- dotted overrides;
``run_config_from_saved(dict)`` rebuilds the config a run directory or checkpoint saved. Stdlib only.
"""
from __future__ import annotations

from .loading import (
    ConfigError,
    FieldError,
    config_hash,
    from_dict,
    load_config,
    merge,
    parse_overrides,
    save_config,
    to_dict,
)
from .schema import (
    PAPER_LR,
    REFERENCE_LR,
    RUNTIME_ONLY_FIELDS,
    SCHEMA_VERSION,
    CamConfig,
    CorrectionsConfig,
    CrfConfig,
    DataConfig,
    IrLabelConfig,
    IrnConfig,
    ModelConfig,
    RandomWalkConfig,
    RunConfig,
    RuntimeConfig,
    SegConfig,
    SolverConfig,
    TrainConfig,
    run_config_from_saved,
)

__all__ = [
    "ConfigError", "FieldError", "config_hash", "from_dict", "load_config", "merge", "parse_overrides",
    "save_config", "to_dict",
    "PAPER_LR", "REFERENCE_LR", "RUNTIME_ONLY_FIELDS", "SCHEMA_VERSION", "CamConfig", "CorrectionsConfig", "CrfConfig",
    "DataConfig", "IrLabelConfig",
    "IrnConfig", "ModelConfig", "RandomWalkConfig", "RunConfig", "RuntimeConfig", "SegConfig", "SolverConfig",
    "TrainConfig", "run_config_from_saved",
]
