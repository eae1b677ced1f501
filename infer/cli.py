"""`aesipe-label MODEL INPUT OUTPUT`: label a folder of images with an exported model.

Exit codes: 0 all images labelled, 1 some inputs failed (the rest are written; see report.json),
2 usage errors (missing model, unreadable folder, bad option).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aesipe.constants import PROG_LABEL as PROG
from aesipe.utils.cli import make_app, run_cli, user_errors, version_option
from aesipe.utils.errors import UserError

app = make_app(PROG)


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"--scales must be numbers like 1.0,0.75, got {text!r}") from None
    if not scales or any(s <= 0 for s in scales):
        raise UserError(f"--scales must be positive numbers, got {text!r}")
    return scales


@app.command(help="Label every image INPUT names into OUTPUT/masks/ (palette PNGs of class indices, the "
                  "input's size) and write OUTPUT/report.json. A re-run keeps the masks that the same model, options "
                  "and tags made and redoes the others.")
@user_errors(PROG)
def label(
    model: Annotated[Path, typer.Argument(help="Exported model (.onnx, or TorchScript .pt) from aesipe-export.")],
    input: Annotated[str, typer.Argument(help="Image folder (searched recursively), one image, a quoted glob "
                                              "pattern like 'photos/**/*.jpg', or @list.txt (one path per line).")],
    output: Annotated[Path, typer.Argument(help="Output folder (never read as input, even inside INPUT).")],
    overlay: Annotated[bool, typer.Option(help="Also write blended previews to OUTPUT/overlays/.")] = False,
    tags: Annotated[Optional[Path], typer.Option(help="CSV 'image,labels' (class names); required by "
                                                      "pseudo-labellers.")] = None,
    crf: Annotated[bool, typer.Option(help="Refine with a dense CRF (pip install 'aesipe[crf]').")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per model call (same-size images batch together; "
                                                 "a pseudo-labeller's also need the same tags).")] = 4,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N (that GPU).")] = "auto",
    half: Annotated[bool, typer.Option(help="Require a float16 model (export with --half).")] = False,
    scales: Annotated[str, typer.Option(help="Segmenters: test-time scales, e.g. 1.0,0.75 (scores are fused); "
                                             "a pseudo-labeller runs its run's scales inside the graph.")] = "1.0",
    flip: Annotated[bool, typer.Option(help="Segmenters: also run the mirror image and fuse.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Redo every mask, valid or not.")] = False,
    workers: Annotated[Optional[int], typer.Option(help="Decode/encode threads (default: min(4, cores)).")] = None,
    max_side: Annotated[int, typer.Option(help="Images with a longer side are labelled at this size and the "
                                               "result resized back.")] = 2048,
    threads: Annotated[Optional[int], typer.Option(help="ONNX Runtime intra-op threads per stream (default: the "
                                                        "cores shared out between the streams).")] = None,
    streams: Annotated[Optional[int], typer.Option(help="Batches the model runs at once on a CPU, one ONNX Runtime "
                                                        "session each (default: a segmenter 2 on two cores or more; "
                                                        "a pseudo-labeller or a GPU 1).")] = None,
    confidence: Annotated[bool, typer.Option(help="Also write OUTPUT/confidence/ (8-bit maps of the written class's "
                                                  "probability), per-image confidence in report.json and "
                                                  "OUTPUT/review.csv (least confident first).")] = False,
    output_format: Annotated[str, typer.Option("--format", help="png (palette masks, always written) | coco "
                                                         "(OUTPUT/annotations.json, RLE; pip install 'aesipe[coco]') | "
                                                         "cvat (Segmentation mask 1.1); comma-separated for several.")] = "png",
    sheet: Annotated[bool, typer.Option(help="Also write OUTPUT/sheet.html: thumbnails of image, overlay and "
                                             "confidence with class fractions, to open in a browser.")] = False,
    tile: Annotated[Optional[int], typer.Option(help="Segmenters: label large images in overlapping SIZE x SIZE "
                                                     "tiles at full resolution (not downscaled by --max-side).",
                                                metavar="SIZE")] = None,
    tile_overlap: Annotated[Optional[float], typer.Option(help="Fraction of a tile its neighbours overlap "
                                                               "(default 1/3).", metavar="F")] = None,
    classes: Annotated[Optional[str], typer.Option(help="Segmenters: only these classes, e.g. cat,dog (the "
                                                        "others count as background).")] = None,
    engine: Annotated[str, typer.Option(help="local (threads on this machine) | ray (a Ray cluster: pip install "
                                             "'aesipe[ray]'; OUTPUT must be a path every node sees).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(help="--engine ray: the cluster to join (auto, HOST:6379, "
                                                            "ray://HOST:10001); default: a new local one.")] = None,
    actors: Annotated[Optional[int], typer.Option(help="--engine ray: labelling actors, one ONNX Runtime session "
                                                       "each (default: one per GPU, else one per 4 CPUs).")] = None,
    version: version_option(PROG) = None,
) -> None:
    from .folder import label_folder

    report = label_folder(model, input, output, tags_csv=tags, overlay=overlay, crf=crf, batch_size=batch_size,
                          device=device, half=half, scales=parse_scales(scales), flip=flip, overwrite=overwrite,
                          workers=workers, max_side=max_side, threads=threads, streams=streams, confidence=confidence,
                          formats=output_format, sheet=sheet, tile=tile, tile_overlap=tile_overlap, classes=classes,
                          engine=engine, ray_address=ray_address, actors=actors, log=lambda m: typer.echo(m, err=True))
    summary = report.summary
    rate = summary.get("images_per_second")
    typer.echo(f"{report.ok} labelled, {report.failed} failed ({summary['resumed']} kept from an earlier run)"
               + (f", {rate:.2f} images/s" if rate else "") + f"; report: {report.path}")
    if report.failed:
        raise typer.Exit(report.exit_code)


def main() -> None:
    run_cli(app, PROG)
