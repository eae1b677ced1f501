"""What the stage commands share: Typer ``Annotated`` aliases and the one way a command gets its run config."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from aesipe.utils.errors import UserError

if TYPE_CHECKING:
    from aesipe.config import RunConfig

RunDir = Annotated[Path, typer.Argument(help="Run directory: holds config.toml, checkpoints and stage outputs.")]
Recipe = Annotated[
    Optional[Path], typer.Option("--recipe", "-r", help="TOML recipe file (only overrides of the defaults).")
]
Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(help="Dotted config overrides, e.g. model.backbone=mobilenet_v2 train.max_steps=50.", show_default=False),
]


def existing_run(run_dir: Path) -> Path:
    """``run_dir``, which a command that reads a stage's outputs needs to exist."""
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    return run_dir


def run_config(run_dir: Path, recipe: Path | None, overrides: list[str] | None, existing: bool = False) -> "RunConfig":
    """The config a command runs with: the run's saved config <- ``recipe`` <- ``overrides`` (nothing written).

    ``existing``: the command reads what earlier stages wrote, so the run directory must be there."""
    from .runconfig import resolve_run_config

    return resolve_run_config(existing_run(run_dir) if existing else run_dir, recipe, overrides or [])


def echo_rank0(message: str) -> None:
    """Print once per job: under torchrun every rank runs the command, only rank 0 reports."""
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(message)
