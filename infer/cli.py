"""`aesipe-label MODEL INPUT OUTPUT`: label a folder of images with an exported model.

Thin: the flags become one ``LabelSettings`` (whose fields hold every default and description) and
``label_folder`` does the work. Exit codes: 0 all images labelled, 1 some inputs failed (the rest are
written; see report.json), 2 usage errors (found before any work), 130 interrupted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aesipe.constants import PROG_LABEL as PROG
from aesipe.utils.cli import make_app, run_cli, user_errors, version_option

from .settings import DEFAULTS, field_doc

app = make_app(PROG)


def _help(name: str, extra: str = "") -> str:
    return field_doc(name) + (f" {extra}" if extra else "")


def _listed(name: str) -> str:
    """A tuple default as its flag writes it (``1.0``, ``png``)."""
    return ",".join(str(v) for v in DEFAULTS[name])


@app.command(help="Label every image INPUT names into OUTPUT/masks/ (palette PNGs of class indices, the "
                  "input's size) and write OUTPUT/report.json. A re-run keeps the masks that the same model, settings "
                  "and tags made and redoes the others.")
@user_errors(PROG)
def label(
    model: Annotated[Path, typer.Argument(metavar="MODEL", show_default=False,
                                          help="Exported model (.onnx, or TorchScript .pt) from aesipe-export.")],
    input: Annotated[str, typer.Argument(metavar="INPUT", show_default=False,
                                         help="Image folder (searched recursively), one image, a quoted glob pattern "
                                              "like 'photos/**/*.jpg', or @list.txt (one path per line).")],
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", show_default=False,
                                           help="Output folder (never read as input, even inside INPUT).")],
    overlay: Annotated[bool, typer.Option(help=_help("overlay"))] = DEFAULTS["overlay"],
    tags: Annotated[Optional[Path], typer.Option(help=_help("tags_csv", "Pseudo-labellers need it."))] = DEFAULTS["tags_csv"],
    crf: Annotated[bool, typer.Option(help=_help("crf", "Needs pip install 'aesipe[crf]'."))] = DEFAULTS["crf"],
    batch_size: Annotated[int, typer.Option(help=_help("batch_size"))] = DEFAULTS["batch_size"],
    device: Annotated[str, typer.Option(help=_help("device"))] = DEFAULTS["device"],
    half: Annotated[bool, typer.Option(help=_help("half", "Export it with aesipe-export --half."))] = DEFAULTS["half"],
    scales: Annotated[str, typer.Option(help=_help("scales", "E.g. 1.0,0.75; a pseudo-labeller runs its run's "
                                                             "scales inside the graph."))] = _listed("scales"),
    flip: Annotated[bool, typer.Option(help=_help("flip"))] = DEFAULTS["flip"],
    overwrite: Annotated[bool, typer.Option(help=_help("overwrite"))] = DEFAULTS["overwrite"],
    workers: Annotated[Optional[int], typer.Option(help=_help("workers"))] = DEFAULTS["workers"],
    max_side: Annotated[int, typer.Option(help=_help("max_side"))] = DEFAULTS["max_side"],
    threads: Annotated[Optional[int], typer.Option(help=_help("threads"))] = DEFAULTS["threads"],
    streams: Annotated[Optional[int], typer.Option(help=_help("streams"))] = DEFAULTS["streams"],
    confidence: Annotated[bool, typer.Option(help=_help("confidence", "The maps are 8-bit PNGs in OUTPUT/confidence/: "
                                                                      "the written class's probability."))] = DEFAULTS["confidence"],
    output_format: Annotated[str, typer.Option("--format", help=_help("formats", "coco: OUTPUT/annotations.json (RLE; "
                                                                      "pip install 'aesipe[coco]'); cvat: Segmentation mask "
                                                                      "1.1; labelstudio: OUTPUT/labelstudio_tasks.json with "
                                                                      "the masks as pre-annotations and "
                                                                      "labelstudio_config.xml (implies --confidence). "
                                                                      "Comma-separated for several."))] = _listed("formats"),
    image_root: Annotated[Optional[str], typer.Option(help=_help("image_root"), metavar="URL")] = DEFAULTS["image_root"],
    reviewed: Annotated[Optional[Path], typer.Option(help=_help("reviewed"), metavar="DIR")] = DEFAULTS["reviewed"],
    sheet: Annotated[bool, typer.Option(help=_help("sheet"))] = DEFAULTS["sheet"],
    tile: Annotated[Optional[int], typer.Option(help=_help("tile"), metavar="SIZE")] = DEFAULTS["tile"],
    tile_overlap: Annotated[Optional[float], typer.Option(help=_help("tile_overlap"), metavar="F")] = DEFAULTS["tile_overlap"],
    classes: Annotated[Optional[str], typer.Option(help=_help("classes", "E.g. cat,dog."))] = DEFAULTS["classes"],
    engine: Annotated[str, typer.Option(help=_help("engine", "Ray needs pip install 'aesipe[ray]' and an OUTPUT "
                                                             "every node sees."))] = DEFAULTS["engine"],
    ray_address: Annotated[Optional[str], typer.Option(help=_help("ray_address", "E.g. auto, HOST:6379, "
                                                                                 "ray://HOST:10001."))] = DEFAULTS["ray_address"],
    actors: Annotated[Optional[int], typer.Option(help=_help("actors"))] = DEFAULTS["actors"],
    version: version_option(PROG) = None,
) -> None:
    from .folder import label_folder
    from .settings import LabelSettings

    settings = LabelSettings(
        scales=scales, flip=flip, crf=crf, max_side=max_side, tile=tile, tile_overlap=tile_overlap, classes=classes,
        device=device, half=half, threads=threads, streams=streams, batch_size=batch_size, workers=workers,
        tags_csv=tags, overlay=overlay, confidence=confidence, formats=output_format, sheet=sheet, overwrite=overwrite,
        image_root=image_root, reviewed=reviewed,
        engine=engine, ray_address=ray_address, actors=actors)
    report = label_folder(model, input, output, settings, log=lambda m: typer.echo(m, err=True))
    summary = report.summary
    rate = summary.get("images_per_second")
    typer.echo(f"{report.ok} labelled, {report.failed} failed ({summary['resumed']} kept from an earlier run)"
               + (f", {rate:.2f} images/s" if rate else "") + f"; report: {report.path}")
    if report.failed:
        raise typer.Exit(report.exit_code)


def main() -> None:
    run_cli(app, PROG)
