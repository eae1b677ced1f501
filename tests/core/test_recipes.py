"""Every recipe in configs/ resolves to a valid config (a misspelt field fails here, not in a user's run), and the
small-data recipe is the authors' method with exactly the one switch its table justifies."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from aesipe.config import RunConfig
from aesipe.train.runconfig import resolve_run_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_recipe_resolves(recipe, tmp_path):
    assert isinstance(resolve_run_config(tmp_path / "run", recipe, []), RunConfig)


def _flat(cfg: RunConfig) -> dict:
    return {f"{section}.{name}": value for section, fields in asdict(cfg).items() if isinstance(fields, dict)
            for name, value in fields.items()}


def test_the_small_data_recipe_is_the_defaults_with_masked_ae_seeds(tmp_path):
    small = _flat(resolve_run_config(tmp_path / "a", CONFIGS / "small_data.toml", []))
    paper = _flat(resolve_run_config(tmp_path / "b", None, []))
    assert {k for k in small if small[k] != paper[k]} == {"model.mask_ae_seeds"}
    assert small["model.mask_ae_seeds"] is True and paper["model.mask_ae_seeds"] is False
