"""`aesipe-export SOURCE [OUT]`: a run directory or checkpoint -> a verified ONNX / TorchScript file."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from aesipe.constants import PROG_EXPORT as PROG
from aesipe.utils.cli import make_app, parse_scales, run_torch_cli, user_errors, version_option
from aesipe.utils.errors import UserError

app = make_app(PROG)


class What(str, Enum):
    segmenter = "segmenter"
    pseudo_labeller = "pseudo-labeller"


class Format(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"


@app.command(help="Export a trained model (run directory or checkpoint) with its metadata, then check it "
                  "against PyTorch. The file is all `aesipe-label` needs.")
@user_errors(PROG)
def export(
    source: Annotated[Path, typer.Argument(help="Run directory (uses seg/final.pt or stage1/final.pt) or checkpoint.")],
    out: Annotated[Optional[Path], typer.Argument(help="Output file (default: <run>/export/<what>.<suffix>).")] = None,
    what: Annotated[Optional[What], typer.Option(help="Model to export (default: the checkpoint's kind; "
                                                      "run directories: segmenter).")] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="File format.")] = Format.onnx,
    half: Annotated[bool, typer.Option(help="Compute in float16 inside the graph (inputs/outputs stay float32).")] = False,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (default 20: loads in ONNX Runtime >= 1.17).")] = None,
    pamr: Annotated[Optional[str], typer.Option(help="Pseudo-labeller: PAMR refinement of its maps, off | per-scale | "
                                                    "fused (default: the run's cam.pamr).")] = None,
    scales: Annotated[Optional[str], typer.Option(help="Pseudo-labeller: test-time scales, e.g. 1.0,0.5 (default: "
                                                      "the run's cam.scales).")] = None,
    flip: Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="Pseudo-labeller: fuse the mirror image "
                                                                          "(default: the run's cam.flip).")] = None,
    verify: Annotated[bool, typer.Option(help="Check the file against PyTorch (fails the export on mismatch).")] = True,
    int8: Annotated[bool, typer.Option("--int8", help="Quantise to int8 (ONNX Runtime static, QDQ) on calibration "
                                                      "images, then judge it against float32.")] = False,
    calibration: Annotated[Optional[Path], typer.Option(help="--int8: images to calibrate and judge on (default: the "
                                                             "run's train and eval splits).")] = None,
    calibration_images: Annotated[int, typer.Option(help="--int8: how many calibration images.")] = 32,
    version: version_option(PROG) = None,
) -> None:
    from .api import export_model

    if calibration is not None and not int8:
        raise UserError("--calibration applies to --int8 exports")
    settings = {"calibration": calibration, "images": calibration_images} if int8 else None
    test_scales = parse_scales(scales, "--scales") if scales is not None else None
    export_model(source, out, format=format.value, half=half, opset=opset, what=what.value if what else None,
                 pamr=pamr, scales=test_scales, flip=flip, verify=verify, log=typer.echo, int8=settings)


def main() -> None:
    # Without torch: one line naming the extra. With torch but without onnx/onnxscript, an ONNX export ends in
    # its own one-line hint, exit 2.
    run_torch_cli(app, PROG, "exporting", "export")
