"""Review-loop commands of ``aesipe-train``: ``corrections`` (bring reviewed masks back) and ``review-queue``
(what to review next). Thin wrappers around ``aesipe.train.corrections`` (docs/review.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aesipe.constants import PROG_TRAIN as PROG
from aesipe.utils.cli import user_errors
from aesipe.utils.errors import UserError

from .cli_options import Overrides, Recipe, RunDir


def _run_config(run_dir: Path, recipe: Path | None, overrides: list[str] | None):
    from .runconfig import resolve_run_config

    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    return resolve_run_config(run_dir, recipe, overrides or [])


@user_errors(PROG)
def corrections(
    run_dir: RunDir,
    source: Annotated[Path, typer.Argument(help="Reviewed masks: a folder of index/palette PNGs named by image id, "
                                                "a CVAT 'Segmentation mask 1.1' export (folder or zip), a COCO "
                                                "annotations.json (RLE or polygons) or a Label Studio JSON export.")],
    overrides: Overrides = None,
    recipe: Recipe = None,
) -> None:
    """Import reviewed masks into RUN_DIR/corrections/ (classes matched by name; all or nothing).

    The segmenter then trains on them instead of the pseudo-labels, IRN's IR labels come from them and
    calibrate judges on them (the `corrections` config section); `pipeline` re-runs only what depends on them."""
    from .corrections import describe, import_corrections

    cfg = _run_config(run_dir, recipe, overrides)
    report = import_corrections(cfg, source, echo=lambda line: typer.echo(line, err=True))
    typer.echo(describe(report, source))


@user_errors(PROG)
def review_queue(
    run_dir: RunDir,
    n: Annotated[int, typer.Option("--n", help="How many images to put in RUN_DIR/review_queue/.")] = 25,
    split: Annotated[Optional[str], typer.Option("--split", help="Split to rank (default: the segmenter's "
                                                                 "training split).")] = None,
    overrides: Overrides = None,
    recipe: Recipe = None,
) -> None:
    """Rank the training images by how much a correction is likely to help: RUN_DIR/review_queue.csv.

    The first N are linked in RUN_DIR/review_queue/, ready for
    `aesipe-label MODEL RUN_DIR/review_queue OUT --format labelstudio` (or cvat)."""
    from .corrections.queue import review_queue as run

    cfg = _run_config(run_dir, recipe, overrides)
    run(cfg, n, split, echo=typer.echo)


def register(app: typer.Typer) -> None:
    app.command("corrections")(corrections)
    app.command("review-queue")(review_queue)
