"""The declared metadata table of ``aesipe.contract``: every key's spec (type, range, structure) and the rules
between keys, with the constants they use. Standard library only. ``aesipe.contract`` reads files with it and
re-exports its names; change a key here, and ``tests/core/test_metadata_contract.py`` derives the values the
new spec must refuse.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from . import contract_fields as f
from . import contract_strings as strings
from .constants import MAX_CLASSES, PAMR_MODES, PROG_EXPORT

PRODUCER = PROG_EXPORT
SCHEMA_VERSION = 1
MODEL_KINDS = ("segmenter", "pseudo_labeller")
PRECISIONS = ("float32", "float16", "int8")
OUTPUT_KINDS = ("logits", "probabilities", "scores", "labels")
OUTPUT_NAMES = ("scores", "labels", "fallback")
"""The graph outputs aesipe reads: ``output.names`` starts with scores and labels; an ONNX pseudo-labeller
adds ``fallback`` (uint8 [batch, 1 + C], 1 where a tagged class's map was all zero and its pre-ReLU CAM stood in)."""
CUSTOM_OPS = ("aesipe::pamr",)
"""The only compiled ops a file may call: those aesipe's own op library registers (``cpp_ext/``)."""
MAX_FIXED_SIDE = 8192
"""Largest side of a fixed-size graph input: 8192^2 x 3 float32 is 0.8 GB per image already."""
MAX_SIZE_DIVISOR = 1024
EXTRA_FILE = "aesipe.json"
"""Name of the TorchScript extra file that holds the metadata (a JSON object of the same strings)."""


CLASS_NAME = f.Text(max_length=100, no_spaces=True, forbidden=",:\"")
"""A class name: one printable line, no space (tags in a CSV cell are space-separated), no comma (CSV,
``--classes``), colon (``labelmap.txt``, ``review.csv``) or double quote (CSV quoting)."""
DESCRIPTION = f.Text(max_length=1000)
NAME = f.Text(max_length=64, no_spaces=True)
TRIPLE = f.ListOf(f.Number(-255.0, 255.0), 3, 3)
DILATIONS = f.ListOf(f.Integer(1, 1024), 1, 32)

INPUT_FORMAT = f.Object({
    "layout": f.Member(f.OneOf(("NCHW",)), doc="the only layout aesipe feeds"),
    "color": f.Member(f.OneOf(("RGB",))),
    "dtype": f.Member(f.OneOf(("float32",))),
    "scale": f.Member(f.Number(0.0, 1.0, above=True), doc="uint8 pixels x scale = the input (before mean/std)"),
    "mean": f.Member(TRIPLE),
    "std": f.Member(f.ListOf(f.Number(0.0, 255.0, above=True), 3, 3)),
    "normalised_in_graph": f.Member(f.Boolean()),
    "size_divisor": f.Member(f.Nullable(f.Integer(1, MAX_SIZE_DIVISOR), example=16), required=False),
    "fixed_size": f.Member(f.Nullable(f.ListOf(f.Integer(1, MAX_FIXED_SIDE), 2, 2), example=[512, 512]), required=False),
    "pad_value": f.Member(TRIPLE, required=False, doc="default: mean"),
})
TEST_TIME = f.Object({
    "scales": f.Member(f.ListOf(f.Number(0.0, 8.0, above=True), 1, 16)),
    "flip": f.Member(f.Boolean()),
    "pamr": f.Member(f.OneOf(PAMR_MODES)),
    "pamr_iters": f.Member(f.Integer(0, 1000), required=False),
    "pamr_dilations": f.Member(DILATIONS, required=False),
    "pamr_downscale": f.Member(f.Integer(1, 64), required=False),
    "zero_map_fallback": f.Member(f.Boolean(), required=False),
})
CRF = f.Object({
    "protocol": f.Member(f.OneOf(("label",))),
    "iterations": f.Member(f.Integer(1, 1000)),
    "gaussian_sxy": f.Member(f.Number(0.0, 10000.0, above=True)),
    "gaussian_compat": f.Member(f.Number(0.0, 10000.0)),
    "bilateral_sxy": f.Member(f.Number(0.0, 10000.0, above=True)),
    "bilateral_srgb": f.Member(f.Number(0.0, 10000.0, above=True)),
    "bilateral_compat": f.Member(f.Number(0.0, 10000.0)),
    "gt_prob": f.Member(f.Number(0.0, 0.999, above=True)),
})
OUTPUT = f.Object({
    "kind": f.Member(f.OneOf(OUTPUT_KINDS)),
    "names": f.Member(f.ListOf(f.OneOf(OUTPUT_NAMES), 2, 3, unique=True)),
    "layout": f.Member(DESCRIPTION, required=False),
    "resized_to_input": f.Member(f.Boolean(), required=False),
    "labels": f.Member(DESCRIPTION, required=False),
    "scores": f.Member(DESCRIPTION, required=False),
    "labels_rule": f.Member(DESCRIPTION, required=False),
    "fuse": f.Member(DESCRIPTION, required=False, doc="aesipe 0.1 pseudo-labellers"),
    "map": f.Member(NAME, required=False),
    "test_time": f.Member(TEST_TIME, required=False, doc="pseudo-labellers: the procedure run inside the graph"),
    "fallback": f.Member(DESCRIPTION, required=False),
    "crf": f.Member(CRF, required=False, doc="pseudo-labellers whose run chose the label CRF (calibrate): the reader "
                                             "applies it after the labels rule, with these settings"),
})
INPUT = f.Object({
    "name": f.Member(f.OneOf(("image", "tags"))),
    "dtype": f.Member(f.OneOf(("float32",))),
    "shape": f.Member(f.ListOf(f.AnyOf((f.Integer(1, 1 << 20), NAME), "a positive size or a dimension name"), 2, 4)),
    "meaning": f.Member(DESCRIPTION, required=False),
})
PAMR = f.Object({
    "mode": f.Member(f.OneOf(PAMR_MODES[1:]), required=False),
    "num_iter": f.Member(f.Integer(0, 1000), required=False),
    "dilations": f.Member(DILATIONS, required=False),
    "downscale": f.Member(f.Integer(1, 64), required=False),
    "image": f.Member(DESCRIPTION, required=False),
    "then": f.Member(DESCRIPTION, required=False),
})
SOURCE = f.Object({
    "checkpoint_sha256": f.Member(f.Text(max_length=64, no_spaces=True)),
    "verified": f.Member(f.Boolean(), doc="the file passed aesipe-export's parity check against PyTorch"),
})
QUANTIZATION = f.Object({
    "check_images": f.Member(f.Integer(0, 1 << 31)),
    "label_agreement": f.Member(f.Number(0.0, 1.0)),
    "miou_float32": f.Member(f.Nullable(f.Number(0.0, 1.0), example=0.5)),
    "miou_int8": f.Member(f.Nullable(f.Number(0.0, 1.0), example=0.5)),
})

METADATA_FIELDS: dict[str, f.Member] = {
    "producer": f.Member(f.OneOf((PRODUCER,))),
    "schema_version": f.Member(strings.IntText(1, SCHEMA_VERSION), doc="newer: refused with 'upgrade aesipe'"),
    "aesipe_version": f.Member(f.Text(max_length=64)),
    "torch_version": f.Member(f.Text(max_length=64)),
    "model_kind": f.Member(f.OneOf(MODEL_KINDS)),
    "classes": f.Member(strings.Json(f.ListOf(CLASS_NAME, 2, MAX_CLASSES, unique=True))),
    "palette": f.Member(strings.Json(f.ListOf(f.ListOf(f.Integer(0, 255), 3, 3), 2, 256))),
    "input_format": f.Member(strings.Json(INPUT_FORMAT)),
    "output": f.Member(strings.Json(OUTPUT)),
    "inputs": f.Member(strings.Json(f.ListOf(INPUT, 1, 2))),
    "pamr": f.Member(strings.Json(PAMR, empty=None), required=False),
    "background_scale": f.Member(strings.NumberText(f.Number(0.0, 100.0, above=True)), required=False),
    "opset": f.Member(strings.IntText(7, 100), required=False),
    "precision": f.Member(f.OneOf(PRECISIONS), required=False),
    "custom_ops": f.Member(strings.Json(f.ListOf(f.OneOf(CUSTOM_OPS), 1, len(CUSTOM_OPS), unique=True)), required=False),
    "op_library": f.Member(f.Text(max_length=4096), required=False),
    "quantization": f.Member(strings.Json(QUANTIZATION), required=False),
    "source": f.Member(strings.Json(SOURCE), required=False,
                       doc="what the file was made from: lets --int8 reuse the checked float32 file of a checkpoint"),
}
"""Every key of the metadata and the spec its value must pass."""


def _input(parsed: Mapping[str, Any], name: str) -> dict | None:
    return next((entry for entry in parsed["inputs"] if entry["name"] == name), None)


def _palette_problem(parsed: Mapping[str, Any]) -> str | None:
    classes, colours = len(parsed["classes"]), len(parsed["palette"])
    return f"palette has {colours} colours for {classes} classes" if colours < classes else None


def _inputs_problem(parsed: Mapping[str, Any]) -> str | None:
    names = [entry["name"] for entry in parsed["inputs"]]
    wanted = ["image", "tags"] if parsed["model_kind"] == "pseudo_labeller" else ["image"]
    if names != wanted:
        return f"inputs of a {parsed['model_kind']} must be {wanted}, got {names}"
    shape = _input(parsed, "image")["shape"]
    if len(shape) != 4 or shape[1] != 3:
        return f"inputs: image must be [batch, 3, height, width] (NCHW RGB), got {shape}"
    tags = _input(parsed, "tags")
    if tags is not None:
        classes, dims = len(parsed["classes"]) - 1, tags["shape"]
        if len(dims) != 2 or (isinstance(dims[1], int) and dims[1] != classes):
            return f"inputs: tags must be [batch, {classes}] (one per foreground class), got {tags['shape']}"
    return None


def _pseudo_only_problem(parsed: Mapping[str, Any]) -> str | None:
    if parsed["model_kind"] == "pseudo_labeller":
        return None
    output = parsed["output"]
    if "test_time" in output or "crf" in output or "fallback" in output["names"] or parsed.get("pamr"):
        return "output.test_time, output.crf, a fallback output and pamr describe pseudo-labellers, not segmenters"
    return None


def _output_names_problem(parsed: Mapping[str, Any]) -> str | None:
    names = parsed["output"]["names"]
    return None if names[:2] == ["scores", "labels"] else f"output.names must start with scores, labels; got {names}"


def _set(meta: dict[str, str], key: str, change) -> dict[str, str]:
    value = json.loads(meta[key])
    change(value)
    return {**meta, key: json.dumps(value)}


METADATA_CHECKS = (
    strings.Check("palette covers the classes", _palette_problem,
          lambda m: _set(m, "palette", lambda p: p.__delitem__(slice(2, None)))),
    strings.Check("inputs match the model kind", _inputs_problem,
          lambda m: _set(m, "inputs", lambda i: i[0]["shape"].__setitem__(1, 4))),
    strings.Check("output names start with scores, labels", _output_names_problem,
          lambda m: _set(m, "output", lambda o: o.__setitem__("names", ["labels", "scores"]))),
    strings.Check("test-time settings only in pseudo-labellers", _pseudo_only_problem,
          lambda m: {**m, "model_kind": "segmenter", "inputs": json.dumps(json.loads(m["inputs"])[:1])}),
)
"""Rules between keys (each with a way to break it, for the test)."""
