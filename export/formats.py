"""The one table of export formats: name -> file suffix, options it honours, writer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from aesipe.utils.errors import UserError


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    options: tuple[str, ...]
    """Options of export_model this format honours (others are refused with a clear error)."""
    write: Callable[..., Path]
    runtime: str


def _write_onnx(graph, samples, input_names, output_names, metadata, path, opset=None) -> Path:
    from .onnx import write_onnx

    return write_onnx(graph, samples, input_names, output_names, metadata, path, opset=opset)


def _write_torchscript(graph, samples, input_names, output_names, metadata, path, opset=None) -> Path:
    from .torchscript import write_torchscript

    return write_torchscript(graph, metadata, path)  # graph is already traced by the caller


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", ".onnx", ("half", "opset", "pamr", "scales", "flip", "int8"), _write_onnx,
                         "ONNX Runtime (CPU, CUDA), any ONNX client"),
    "torchscript": ExportFormat("torchscript", ".pt", ("half", "pamr", "scales", "flip"), _write_torchscript,
                                "libtorch (C++), torch.jit.load"),
}


def get_format(name: str) -> ExportFormat:
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise UserError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}") from None


def check_options(fmt: ExportFormat, used: Sequence[str]) -> None:
    for option in used:
        if option not in fmt.options:
            raise UserError(f"--{option} does not apply to {fmt.name} export")
