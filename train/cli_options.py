"""Options shared by the stage commands (Typer ``Annotated`` aliases)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

RunDir = Annotated[Path, typer.Argument(help="Run directory: holds config.toml, checkpoints and stage outputs.")]
Recipe = Annotated[
    Optional[Path], typer.Option("--recipe", "-r", help="TOML recipe file (only overrides of the defaults).")
]
Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(help="Dotted config overrides, e.g. model.backbone=mobilenet_v2 train.max_steps=50.", show_default=False),
]


def echo_rank0(message: str) -> None:
    """Print once per job: under torchrun every rank runs the command, only rank 0 reports."""
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(message)
