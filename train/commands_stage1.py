"""Stage-1 commands of ``aesipe-train``: ``train``, ``make-cam``, ``import-checkpoint`` (thin wrappers)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aesipe.constants import PROG_TRAIN as PROG
from aesipe.utils.cli import user_errors
from aesipe.utils.errors import UserError

from .cli_options import Overrides, Recipe, RunDir, echo_rank0, run_config


@user_errors(PROG)
def train(run_dir: RunDir, overrides: Overrides = None, recipe: Recipe = None) -> None:
    """Stage 1: train the AE-SIPE network.

    Writes RUN_DIR/stage1/final.pt; resumes from RUN_DIR/stage1/checkpoints/last.pt.

    Several GPUs: torchrun --nproc_per_node=N -m aesipe.train.cli train RUN_DIR ..."""
    from .stages.stage1 import train_stage1

    cfg = run_config(run_dir, recipe, overrides)
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
    """Multi-scale + flip maps of every image of a split.

    The pseudo-labels are made from them. Writes RUN_DIR/cams/<split>/<id>.npz; files already there are kept."""
    from .stages.make_cam import make_cams

    cfg = run_config(run_dir, recipe, overrides)
    typer.echo(f"wrote {make_cams(cfg, split, checkpoint)}")


@user_errors(PROG)
def import_checkpoint(
    source: Annotated[Path, typer.Argument(help="The authors' SIPE / AE-SIPE checkpoint ({'net': state_dict}).")],
    run_dir: RunDir,
    overrides: Overrides = None,
    recipe: Recipe = None,
) -> None:
    """Use the authors' SIPE/AE-SIPE checkpoint as stage 1.

    Writes RUN_DIR/stage1/final.pt (for make-cam and aesipe-export)."""
    from .stages.stage1 import import_authors_checkpoint

    cfg = run_config(run_dir, recipe, overrides)
    path, report = import_authors_checkpoint(cfg, source)
    typer.echo(report)
    typer.echo(f"wrote {path}")


@user_errors(PROG)
def config(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A run directory: show its config (default: the defaults).",
                                                      show_default=False)] = None,
    overrides: Overrides = None,
    recipe: Recipe = None,
) -> None:
    """Print every config field, its value and what it does.

    Defaults <- RUN_DIR's config <- recipe <- overrides; nothing is written. Override any field on any command as section.field=value."""
    from aesipe.config import RunConfig, load_config, to_dict
    from aesipe.config.describe import describe_config
    from aesipe.config.schema import read_run_config

    base = None
    if run_dir is not None:
        if "=" in str(run_dir):  # `aesipe-train config train.lr=0.1`: an override, not a run directory
            overrides, run_dir = [str(run_dir), *(overrides or [])], None
        elif not (run_dir / "config.toml").is_file():
            raise UserError(f"{run_dir} is not a run directory (no config.toml)")
        else:
            base = to_dict(read_run_config(run_dir / "config.toml"))
    cfg = load_config(RunConfig, recipe, overrides or [], base=base)
    typer.echo("\n".join(describe_config(cfg)))

