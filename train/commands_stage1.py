"""Stage-1 commands of ``aesipe-train``: ``train``, ``make-cam``, ``import-checkpoint`` (thin wrappers)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aesipe.utils.errors import user_errors

from .cli_options import Overrides, Recipe, RunDir, echo_rank0

PROG = "aesipe-train"


@user_errors(PROG)
def train(run_dir: RunDir, overrides: Overrides = None, recipe: Recipe = None) -> None:
    """Train the AE-SIPE network (resumes from RUN_DIR/stage1/checkpoints/last.pt); writes stage1/final.pt.

    Several GPUs: torchrun --nproc_per_node=N -m aesipe.train.cli train RUN_DIR ..."""
    from .runconfig import resolve_run_config
    from .stages.stage1 import train_stage1

    cfg = resolve_run_config(run_dir, recipe, overrides or [])
    path = train_stage1(cfg)
    echo_rank0(f"wrote {path}")


@user_errors(PROG)
def make_cam(
    run_dir: RunDir,
    overrides: Overrides = None,
    recipe: Recipe = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Split to label (default: data.cam_split).")] = None,
    checkpoint: Annotated[
        Optional[Path], typer.Option("--checkpoint", help="Stage-1 checkpoint (default: RUN_DIR/stage1/final.pt).")
    ] = None,
) -> None:
    """Multi-scale + flip maps for every image of a split: RUN_DIR/cams/<split>/<id>.npz (skips existing files)."""
    from .runconfig import resolve_run_config
    from .stages.make_cam import make_cams

    cfg = resolve_run_config(run_dir, recipe, overrides or [])
    typer.echo(f"wrote {make_cams(cfg, split, checkpoint)}")


@user_errors(PROG)
def import_checkpoint(
    source: Annotated[Path, typer.Argument(help="The authors' SIPE / AE-SIPE checkpoint ({'net': state_dict}).")],
    run_dir: RunDir,
    overrides: Overrides = None,
    recipe: Recipe = None,
) -> None:
    """Convert the authors' checkpoint into RUN_DIR/stage1/final.pt (usable by make-cam and aesipe-export)."""
    from .runconfig import resolve_run_config
    from .stages.stage1 import import_authors_checkpoint

    cfg = resolve_run_config(run_dir, recipe, overrides or [])
    path, report = import_authors_checkpoint(cfg, source)
    typer.echo(report)
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("make-cam")(make_cam)
    app.command("import-checkpoint")(import_checkpoint)
