"""Is an ONNX export running? Ops that ONNX Runtime runs slowly (or not at all) in their eager form
switch to a standard-op form while ``torch.onnx.export`` traces them (PAMR, bicubic resizing)."""
from __future__ import annotations

import sys


def onnx_exporting() -> bool:
    # torch.onnx is imported lazily by torch; if nobody imported it, no ONNX export is running.
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()
