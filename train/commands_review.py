"""Review-loop commands of ``aesipe-train``: ``corrections`` (bring reviewed masks back) and ``review-queue``
(what to review next). Thin wrappers around ``aesipe.train.corrections`` (docs/review.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aesipe.constants import PROG_TRAIN as PROG
from aesipe.utils.cli import user_errors

from .cli_options import Overrides, Recipe, RunDir, run_config


@user_errors(PROG)
def corrections(
    run_dir: RunDir,
    source: Annotated[Path, typer.Argument(help="Reviewed masks: a folder of index/palette PNGs named by image id, "
                                                "a CVAT 'Segmentation mask 1.1' export (folder or zip), a COCO "
                                                "annotations.json (RLE or polygons) or a Label Studio JSON export.")],
    overrides: Overrides = None,
    recipe: Recipe = None,
) -> None:
    """Import reviewed masks into the run (classes by name).

    RUN_DIR/corrections/ receives them all or nothing, with a record of where each came from.
    The segmenter then trains on them instead of the pseudo-labels, IRN's IR labels come from them and
    calibrate judges on them (the `corrections` config section); `pipeline` re-runs only what depends on them."""
    from .corrections import describe, import_corrections

    cfg = run_config(run_dir, recipe, overrides, existing=True)
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
    """Rank training images by what a correction would add.

    The ranking is written to RUN_DIR/review_queue.csv.
    The first N are linked in RUN_DIR/review_queue/, ready for
    `aesipe-label MODEL RUN_DIR/review_queue OUT --format labelstudio` (or cvat)."""
    from .corrections.queue import review_queue as run

    cfg = run_config(run_dir, recipe, overrides, existing=True)
    run(cfg, n, split, echo=typer.echo)

