"""The one table of export formats: name -> file suffix, the options it honours, what it needs installed, and
how it writes a graph (the caller only hands over the graph and a metadata maker; nothing else branches on a
format's name)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from aesipe.utils.errors import UserError

MetadataMaker = Callable[..., dict]
"""``make(opset=..., custom_ops=..., op_library=...)`` -> the file's metadata (``aesipe.contract``)."""


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    options: tuple[str, ...]
    """Options of export_model this format honours (others are refused with a clear error)."""
    require: Callable[[], None]
    """Raises ``UserError`` when what the format needs is not installed."""
    write: Callable[..., Path]
    """``write(graph, samples, input_names, output_names, make_metadata, path, opset)``."""


def _require_onnx() -> None:
    from .onnx import require_onnx

    require_onnx()


def _write_onnx(graph, samples, input_names, output_names, make_metadata: MetadataMaker, path: Path,
                opset: int | None) -> Path:
    from .onnx import DEFAULT_OPSET, write_onnx

    opset = opset or DEFAULT_OPSET
    return write_onnx(graph, samples, input_names, output_names, make_metadata(opset=opset), path, opset=opset)


def _write_torchscript(graph, samples, input_names, output_names, make_metadata: MetadataMaker, path: Path,
                       opset: int | None) -> Path:
    from .torchscript import custom_ops_in, op_library_path, trace, write_torchscript

    traced = trace(graph, samples)
    ops = custom_ops_in(traced)
    metadata = make_metadata(custom_ops=ops, op_library=op_library_path() if ops else None)
    return write_torchscript(traced, metadata, path)


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", ".onnx", ("half", "opset", "pamr", "scales", "flip", "int8"), _require_onnx,
                         _write_onnx),
    "torchscript": ExportFormat("torchscript", ".pt", ("half", "pamr", "scales", "flip"), lambda: None,
                                _write_torchscript),
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
