"""``export_model``: checkpoint or run directory -> a verified, self-describing ONNX or TorchScript file."""
from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import Callable

import torch

import aesipe
from aesipe.contract import InputFormat, build_metadata
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import voc_palette

from .formats import ExportFormat, check_options, get_format
from .sources import LoadedModel, load_source
from .wrappers import IMAGENET_MEAN, IMAGENET_STD, PamrSettings, PseudoLabellerGraph, SegmenterGraph

SIZE_DIVISOR = 16
"""Inputs are padded to a multiple of the networks' output stride (16), as in training."""


def _normalise_what(what: str | None) -> str | None:
    return what.replace("-", "_") if what else None


def _mean_std() -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:  # the data pipeline's constants are the ones the model was trained with
        from aesipe.data.transforms import IMAGENET_MEAN as mean, IMAGENET_STD as std

        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (ImportError, AttributeError):
        return IMAGENET_MEAN, IMAGENET_STD


def default_output(source: Path, loaded: LoadedModel, fmt: ExportFormat) -> Path:
    if source.is_dir():
        return source / "export" / f"{loaded.what}{fmt.suffix}"
    return loaded.checkpoint.with_suffix(fmt.suffix)


def build_graph(loaded: LoadedModel, net: torch.nn.Module, pamr: bool, half: bool) -> torch.nn.Module:
    mean, std = _mean_std()
    if loaded.what == "segmenter":
        graph = SegmenterGraph(net, mean, std, half=half)
    else:
        model = loaded.cfg.model
        settings = PamrSettings(model.pamr_iters, tuple(model.pamr_dilations), model.pamr_backend) if pamr else None
        graph = PseudoLabellerGraph(net, loaded.cfg.cam.map, loaded.cfg.cam.background_scale, settings,
                                    mean, std, half=half)
    graph.eval().requires_grad_(False)  # PAMR refuses gradients; export needs none
    return graph


def _metadata(loaded: LoadedModel, graph, fmt: ExportFormat, opset: int | None, half: bool,
              custom_ops: tuple[str, ...] = (), op_library: str | None = None) -> dict[str, str]:
    mean, std = _mean_std()
    classes = loaded.class_names
    palette = loaded.palette or voc_palette(max(len(classes), 1)).tolist()
    seg = loaded.what == "segmenter"
    inputs = [{"name": "image", "dtype": "float32", "shape": ["batch", 3, "height", "width"],
               "meaning": "RGB in [0, 1]; pad H, W to a multiple of size_divisor with pad_value"}]
    if not seg:
        inputs.append({"name": "tags", "dtype": "float32", "shape": ["batch", len(classes) - 1],
                       "meaning": "multi-hot of the image's classes, order = classes[1:] (background excluded)"})
    output = {
        "kind": "logits" if seg else "scores",
        "names": ["scores", "labels"],
        "layout": "scores: NCHW float32 [batch, classes, height, width]; labels: NHW uint8",
        "resized_to_input": True,
        "labels": "argmax over classes" + ("" if seg else " after background x background_scale"),
    }
    if not seg:
        output["scores"] = "maps / per-channel max, classes not in tags zeroed, background not yet scaled"
        output["fuse"] = "test-time scales: sum scores resized to the image, divide by per-channel max, " \
                         "multiply channel 0 by background_scale, argmax"
        output["map"] = loaded.cfg.cam.map
    pamr = graph.pamr.describe() if not seg and graph.pamr is not None else None
    return build_metadata(
        model_kind=loaded.what, classes=classes, palette=palette,
        input_format=InputFormat(mean=mean, std=std, pad_value=mean, size_divisor=SIZE_DIVISOR),
        output=output, inputs=inputs, aesipe_version=aesipe.__version__, torch_version=torch.__version__,
        pamr=pamr, background_scale=1.0 if seg else loaded.cfg.cam.background_scale,
        opset=opset if fmt.name == "onnx" else None, precision="float16" if half else "float32",
        custom_ops=custom_ops, op_library=op_library,
    )


def export_loaded(loaded: LoadedModel, out_path: Path, fmt: ExportFormat, half: bool = False,
                  opset: int | None = None, pamr: bool = True, verify: bool = True,
                  log: Callable[[str], None] = print) -> Path:
    """Export ``loaded`` to ``out_path`` atomically; a file failing the parity check is never left behind."""
    from .verify import sample_inputs, verify_file

    num_classes = len(loaded.class_names) - 1
    reference = build_graph(loaded, loaded.net, pamr, half=False)
    graph = build_graph(loaded, copy.deepcopy(loaded.net), pamr, half=True) if half else reference
    samples = sample_inputs(64, 96, None if loaded.what == "segmenter" else num_classes)
    input_names = ["image"] if loaded.what == "segmenter" else ["image", "tags"]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.stem}.partial-{os.getpid()}{out_path.suffix}")
    try:
        with torch.no_grad():
            if fmt.name == "torchscript":
                from .torchscript import custom_ops_in, op_library_path, trace

                graph = trace(graph, samples)
                ops = custom_ops_in(graph)
                metadata = _metadata(loaded, reference, fmt, None, half, ops, op_library_path() if ops else None)
            else:
                from .onnx import DEFAULT_OPSET

                opset = opset or DEFAULT_OPSET
                metadata = _metadata(loaded, reference, fmt, opset, half)
            fmt.write(graph, samples, input_names, ["scores", "labels"], metadata, partial, opset=opset)
        if verify:
            result = verify_file(partial, reference, None if loaded.what == "segmenter" else num_classes,
                                 "float16" if half else "float32")
            log(result.summary())
            if not result.ok:
                raise UserError(f"the exported file does not match PyTorch ({result.summary()}); nothing written",
                                exit_code=1)
        os.replace(partial, out_path)
        log(f"wrote {out_path}")
        tags = "" if loaded.what == "segmenter" else " --tags TAGS.csv"
        log(f"next: aesipe-label {out_path} IMAGES/ OUT_DIR/{tags}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return out_path


def export_model(source: str | Path, out_path: str | Path | None = None, format: str = "onnx", half: bool = False,
                 opset: int | None = None, what: str | None = None, pamr: bool = True, verify: bool = True,
                 log: Callable[[str], None] = print) -> Path:
    """Export a run directory (``seg/final.pt`` or ``stage1/final.pt``) or checkpoint file.

    ``what``: "segmenter" or "pseudo_labeller" (None: the checkpoint's kind; a run directory: segmenter).
    Returns the written path. Raises ``UserError`` (one line) for anything the user can fix.
    """
    fmt = get_format(format)
    used = [name for name, on in (("half", half), ("opset", opset is not None), ("pamr", not pamr)) if on]
    check_options(fmt, used)
    if fmt.name == "onnx":
        from .onnx import require_onnx

        require_onnx()
    source = Path(source)
    loaded = load_source(source, _normalise_what(what))
    out = Path(out_path) if out_path else default_output(source, loaded, fmt)
    if out.suffix.lower() not in (fmt.suffix, ".torchscript"):
        out = out.with_name(out.name + fmt.suffix)
    return export_loaded(loaded, out, fmt, half=half, opset=opset, pamr=pamr, verify=verify, log=log)
