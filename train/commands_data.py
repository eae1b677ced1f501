"""Data and evaluation commands of ``aesipe-train``: ``synth``, ``eval-cam``, ``crf`` (thin wrappers)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from aesipe.constants import PROG_TRAIN as PROG
from aesipe.utils.cli import parse_scales, user_errors
from aesipe.utils.errors import UserError

from .cli_options import Overrides, Recipe, RunDir, run_config

Split = Annotated[Optional[str], typer.Option("--split", help="Split to use (default: data.cam_split; ir: data.train_split).")]
MapKeyOption = Annotated[
    str,
    typer.Option(
        "--map-key",
        help="'maps': the selected map (cam.map); 'iscam' / 'aeiscam': those maps of the same run; "
        "'cam': the plain CAM, background = 1 - max.",
    ),
]
Protocol = Annotated[
    Optional[str],
    typer.Option("--protocol", help="CRF protocol: 'label' (AE-SIPE +CRF) or 'ir' (SIPE +CRF / IR labels). Default: crf.protocol."),
]


def _choice(value: str | None, choices: tuple[str, ...], option: str) -> str | None:
    if value is not None and value not in choices:
        raise UserError(f"{option} must be one of {', '.join(choices)}, not {value!r}")
    return value


@user_errors(PROG)
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write (VOC-style layout).")],
    images: Annotated[int, typer.Option("--images", help="Number of images in all (train + val).")] = 400,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of the images in the val split.")] = 0.2,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels (square images).")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 0,
    classes: Annotated[int, typer.Option("--classes", help="Number of object classes (1-8).")] = 5,
    image_format: Annotated[str, typer.Option("--format", help="jpg or png.")] = "jpg",
) -> None:
    """Write the built-in synthetic dataset (VOC layout).

    Textured scenes with exact masks and CSV tags, the same bytes for the same seed: the whole pipeline runs on it on a CPU."""
    from aesipe.data.synth import generate

    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction must lie in [0, 1), not {val_fraction}")
    num_val = round(images * val_fraction)
    path = generate(out_dir, images - num_val, num_val, size, seed, classes, image_format)
    typer.echo(f"wrote {images - num_val} train + {num_val} val images to {path}")


@user_errors(PROG)
def eval_cam(
    run_dir: RunDir,
    overrides: Overrides = None,
    recipe: Recipe = None,
    split: Split = None,
    map_key: MapKeyOption = "maps",
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="Background scales to try: 0.6,0.8,1.0 or a range "
                                                                 "START:STOP:STEP such as 0.5:1.5:0.05.")] = None,
    crf: Annotated[bool, typer.Option("--crf", help="Also judge the CRF-refined labels (see --protocol).")] = False,
    protocol: Protocol = None,
) -> None:
    """Judge the maps: mIoU, per-class IoU, precision, recall.

    Writes RUN_DIR/cam_eval.json; --sweep also tries other background scales, --crf the CRF-refined labels."""
    from .stages.evaluate import MAP_KEYS, describe, evaluate_cams, save_cam_eval

    cfg = run_config(run_dir, recipe, overrides, existing=True)
    _choice(map_key, MAP_KEYS, "--map-key")
    protocol = _choice(protocol, ("label", "ir"), "--protocol") or cfg.crf.protocol
    scales = [cfg.cam.background_scale, *(parse_scales(sweep, "--sweep") if sweep is not None else cfg.cam.sweep)]
    if cfg.cam.crf and map_key == "maps" and not crf:  # the run's pseudo-labels are CRF-refined (calibrate)
        crf, protocol = True, "label"
    plain = evaluate_cams(cfg, split, map_key, scales)
    typer.echo(describe(plain))
    with_crf = None
    if crf:
        crf_scales = scales if protocol == "label" else [cfg.ir_label.bg_background_scale, *scales[1:]]
        with_crf = evaluate_cams(cfg, split, map_key, crf_scales, crf_protocol=protocol)
        typer.echo("\n" + describe(with_crf))
    typer.echo(f"wrote {save_cam_eval(cfg, plain, with_crf)}")


@user_errors(PROG)
def crf(
    run_dir: RunDir,
    overrides: Overrides = None,
    recipe: Recipe = None,
    protocol: Protocol = None,
    split: Split = None,
    map_key: MapKeyOption = "maps",
    sheet: Annotated[bool, typer.Option("--sheet", help="Also write a contact sheet (image | GT | labels) JPEG.")] = False,
) -> None:
    """Dense-CRF pseudo-labels from the maps, as palette PNGs.

    Writes RUN_DIR/pseudo_labels/<split>/ (--protocol label) or RUN_DIR/ir_labels/<split>/ (--protocol ir)."""
    from aesipe.data import open_dataset

    from .stages.evaluate import MAP_KEYS
    from .stages.ir_label import make_ir_labels
    from .stages.label_folders import contact_sheet, write_pseudo_labels

    cfg = run_config(run_dir, recipe, overrides, existing=True)
    protocol = _choice(protocol, ("label", "ir"), "--protocol") or cfg.crf.protocol
    _choice(map_key, MAP_KEYS, "--map-key")
    if protocol == "ir":
        if map_key != "maps":
            raise UserError("IR labels are made from the selected maps ('maps'); other --map-key values apply to --protocol label")
        out_dir = make_ir_labels(cfg, split)
    else:
        out_dir = write_pseudo_labels(cfg, split, map_key, crf=True)
    typer.echo(f"wrote {out_dir}")
    if sheet:
        ds = open_dataset(cfg.data, out_dir.name)
        typer.echo(f"wrote {contact_sheet(ds, out_dir, out_dir.parent / f'{out_dir.name}_sheet.jpg')}")


@user_errors(PROG)
def calibrate(
    run_dir: RunDir,
    overrides: Overrides = None,
    recipe: Recipe = None,
    split: Split = None,
    images: Annotated[int, typer.Option("--images", help="How many images with masks to calibrate on.")] = 20,
    scales: Annotated[Optional[str], typer.Option("--scales", help="Background scales to try (default "
                                                                   "0.5:1.5:0.05).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Stage-1 checkpoint (default: "
                                                                            "RUN_DIR/stage1/final.pt).")] = None,
    maps: Annotated[Optional[str], typer.Option("--maps", help="Maps to choose from, e.g. iscam,aeiscam (default: "
                                                               "every map the network makes).")] = None,
    crf: Annotated[bool, typer.Option("--crf/--no-crf", help="Also try the label CRF on each map.")] = True,
) -> None:
    """Pick map, background scale and CRF on a few masks.

    Judges CAM, IS-CAM and AE-IS-CAM at every background scale (and each at its best with the label CRF) on the
    masked images, makes their CAMs if needed, and stores the best in the run. eval-cam, the CRF pseudo-labels,
    the IR labels, the pipeline and the exported pseudo-labeller then use it. Judge the result on images the
    calibration did not see."""
    from .stages.calibrate import calibrate as run
    from .stages.calibrate import describe

    cfg = run_config(run_dir, recipe, overrides, existing=True)
    chosen_maps = [m.strip() for m in maps.split(",") if m.strip()] if maps else None
    _, record = run(cfg, split, images, list(parse_scales(scales, "--scales")) if scales is not None else None, checkpoint,
                    maps=chosen_maps, crf=crf)
    typer.echo(describe(record))

