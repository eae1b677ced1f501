"""Stage 2-3 and pipeline commands of ``aesipe-train`` (thin wrappers around ``stages/`` and ``pipeline``):
``ir-label``, ``irn``, ``make-seg-labels``, ``seg``, ``eval-seg``, ``pipeline``, ``demo``."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aesipe.constants import PROG_TRAIN as PROG
from aesipe.utils.cli import user_errors

from .cli_options import Overrides, Recipe, RunDir, run_config

SplitOption = Annotated[Optional[str], typer.Option("--split", help="Split to work on (default: see the command).")]


@user_errors(PROG)
def ir_label(run_dir: RunDir, overrides: Overrides = None, recipe: Recipe = None, split: SplitOption = None) -> None:
    """IR labels for IRN (confident fg/bg, 255 = unsure).

    Writes RUN_DIR/ir_labels/<split>/ (default split: data.train_split)."""
    from .stages.ir_label import make_ir_labels

    cfg = run_config(run_dir, recipe, overrides, existing=True)
    typer.echo(f"wrote {make_ir_labels(cfg, split)}")


@user_errors(PROG)
def irn(run_dir: RunDir, overrides: Overrides = None, recipe: Recipe = None) -> None:
    """Train IRN on the IR labels.

    Writes RUN_DIR/irn/final.pt; resumes from RUN_DIR/irn/checkpoints/last.pt.

    Several GPUs: torchrun --nproc_per_node=N -m aesipe.train.cli irn RUN_DIR ..."""
    from .stages.irn import train_irn

    cfg = run_config(run_dir, recipe, overrides, existing=True)
    typer.echo(f"wrote {train_irn(cfg)}")


@user_errors(PROG)
def make_seg_labels(run_dir: RunDir, overrides: Overrides = None, recipe: Recipe = None, split: SplitOption = None) -> None:
    """Random-walk pseudo-labels from the maps and IRN.

    Writes RUN_DIR/seg_labels/<split>/ (default split: the segmenter's training split)."""
    from .stages.random_walk import make_seg_labels as run

    cfg = run_config(run_dir, recipe, overrides, existing=True)
    typer.echo(f"wrote {run(cfg, split)}")


@user_errors(PROG)
def seg(run_dir: RunDir, overrides: Overrides = None, recipe: Recipe = None) -> None:
    """Train DeepLabV3 on the pseudo-labels.

    Writes RUN_DIR/seg/final.pt; resumes from RUN_DIR/seg/checkpoints/last.pt.

    Several GPUs: torchrun --nproc_per_node=N -m aesipe.train.cli seg RUN_DIR ..."""
    from .stages.seg import train_seg

    cfg = run_config(run_dir, recipe, overrides, existing=True)
    typer.echo(f"wrote {train_seg(cfg)}")


@user_errors(PROG)
def eval_seg(
    run_dir: RunDir,
    overrides: Overrides = None,
    recipe: Recipe = None,
    split: SplitOption = None,
    checkpoint: Annotated[
        Optional[Path], typer.Option("--checkpoint", help="Segmenter checkpoint (default: RUN_DIR/seg/final.pt).")
    ] = None,
) -> None:
    """Judge the segmenter on a split with masks.

    Prints the mIoU table and writes RUN_DIR/seg_eval.json (default split: data.eval_split).

    Multi-scale + flip and CRF: seg.test_scales=0.75,1,1.25 seg.test_flip=true seg.test_crf=true."""
    from .stages.seg_eval import describe, evaluate_segmenter, save_eval

    cfg = run_config(run_dir, recipe, overrides, existing=True)
    result = evaluate_segmenter(cfg, split, checkpoint)
    typer.echo(describe(result, "DeepLabV3"))
    typer.echo(f"wrote {save_eval(cfg, result)}")


def _stage_help() -> str:
    from .pipeline import STAGE_NAMES

    return ", ".join(STAGE_NAMES)


@user_errors(PROG)
def pipeline(
    run_dir: RunDir,
    overrides: Overrides = None,
    recipe: Recipe = None,
    start: Annotated[Optional[str], typer.Option("--from", help=f"Redo from this stage on ({_stage_help()}).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Stop after this stage.")] = None,
) -> None:
    """Run every stage in order; skip finished, redo changed.

    The data is checked before any stage runs; RUN_DIR/manifest.json records each stage."""
    from .pipeline import run_pipeline
    from .pipeline_summary import summary_lines

    cfg = run_config(run_dir, recipe, overrides)
    manifest = run_pipeline(cfg, start, until, echo=typer.echo)
    lines = summary_lines(manifest)
    if lines:
        typer.echo("\n".join(["", "mIoU by stage:", *lines]))


@user_errors(PROG)
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the synthetic data, the run and the labelled images.")] = Path("demo"),
) -> None:
    """Try it all on a CPU: synthetic data to labelled images.

    Synthetic data, the whole pipeline at CPU size, ONNX export, labelling a folder. Prints the mIoU of every stage; a re-run resumes."""
    from .demo import run_demo

    run_demo(out, echo=typer.echo)

