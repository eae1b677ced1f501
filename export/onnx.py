"""ONNX writer: torch.onnx dynamo export with dynamic batch/height/width and aesipe metadata.

The dynamo exporter (it needs onnxscript, which torch does not pull in) defaults to opset 20, which
ONNX Runtime 1.31/1.32 loads. PAMR exports as standard ops (``aesipe.ops`` switches to its decomposition while
``torch.onnx.export`` runs), so the file runs in stock ONNX Runtime.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import torch

from aesipe.contract import PRODUCER
from aesipe.utils.errors import UserError

DEFAULT_OPSET = 20
MISSING_HINT = "ONNX export needs onnx and onnxscript: pip install 'aesipe[export]'"


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError(MISSING_HINT, exit_code=2) from None


def _dynamic_shapes(input_names: Sequence[str]) -> dict:
    batch = torch.export.Dim("batch", min=1, max=1024)
    # Height/width stay free: the caller pads to the size divisor; a guard here would refuse other sizes.
    dims = {"image": {0: batch, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}
    if "tags" in input_names:
        dims["tags"] = {0: batch}
    return {name: dims[name] for name in input_names}


def write_onnx(
    graph: torch.nn.Module,
    sample_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    metadata: Mapping[str, str],
    path: Path,
    opset: int | None = None,
    verbose: bool = False,
) -> Path:
    """Export ``graph`` to ``path`` (the caller makes it atomic) and store ``metadata`` in metadata_props."""
    require_onnx()
    import onnx

    opset = opset or DEFAULT_OPSET
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            sample_inputs,
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=_dynamic_shapes(input_names),
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path))
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = PRODUCER
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
