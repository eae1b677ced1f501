"""The export metadata contract: what an exported graph file must carry so that a client needs nothing else.

Written by ``aesipe-export`` (ONNX ``metadata_props``; TorchScript extra file ``aesipe.json``) and read by
``aesipe-label`` and any third-party client. Every value is a string; structured values are JSON.
Standard library only: the torch-free labelling side imports this module.

Every key is declared once, in ``METADATA_FIELDS``, with the spec that checks its type, range and
structure (``aesipe.contract_fields``), and the rules between keys in ``METADATA_CHECKS``. Reading a file
runs them all before anything else, so any malformed value ends in one ``MetadataError`` line naming the
key; ``build_metadata`` runs the same checks on what it writes (a file aesipe writes is one it can read)
and also refuses keys the table does not declare. Keys other tools add to an ONNX file are ignored when
reading; unknown keys inside aesipe's own JSON values are refused (they could change how to feed the file).

Keys: ``producer`` (always "aesipe-export"), ``schema_version``, ``aesipe_version``, ``torch_version``,
``opset`` (ONNX only), ``precision`` (float32 | float16 | int8: the arithmetic inside; the graph's inputs
and outputs stay float32), ``model_kind`` (segmenter | pseudo_labeller), ``classes`` (JSON list; index =
label value, background first; at most ``MAX_CLASSES``, distinct, each one line without spaces, commas,
colons or quotes: names end up in CSV cells and in CVAT's ``labelmap.txt``), ``palette`` (JSON list of
[r, g, b], at least one per class), ``input_format``, ``output`` (``kind``, ``names``, descriptions; a
pseudo-labeller's ``test_time``), ``inputs``, ``pamr`` (JSON object, or "" when not in the graph),
``background_scale``, ``quantization`` (int8 files: the check against float32), ``custom_ops`` (JSON list
of the aesipe ops the file calls, only names from ``CUSTOM_OPS``; TorchScript only) and ``op_library``
(the exporting machine's path of the library holding them: informative only, never a path to load).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import contract_fields as f
from . import contract_strings as strings
from .constants import IMAGENET_MEAN, IMAGENET_STD, MAX_CLASSES, PAMR_MODES, PIXEL_SCALE, PROG_EXPORT

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


class MetadataError(ValueError):
    """The file lacks aesipe metadata, has a newer schema, or the metadata is malformed."""


# ---- the declared table ---------------------------------------------------------------------------------
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


# ---- parsed forms ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputFormat:
    """How to turn an RGB image into the graph's ``image`` input."""

    layout: str = "NCHW"
    color: str = "RGB"
    dtype: str = "float32"
    scale: float = PIXEL_SCALE
    """Multiply uint8 pixel values by this (the graph then sees [0, 1])."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    normalised_in_graph: bool = True
    """True: the graph applies (x - mean) / std itself; feed x = pixels * scale."""
    size_divisor: int | None = 16
    """Pad height and width up to a multiple of this (bottom/right), then crop the outputs back."""
    fixed_size: tuple[int, int] | None = None
    """(H, W) the graph only accepts; None for dynamic sizes."""
    pad_value: tuple[float, float, float] = IMAGENET_MEAN
    """Value of padded pixels in the [0, 1] input: the mean colour, i.e. zero after normalisation."""

    def to_json(self) -> str:
        return json.dumps({
            "layout": self.layout, "color": self.color, "dtype": self.dtype, "scale": self.scale,
            "mean": list(self.mean), "std": list(self.std), "normalised_in_graph": self.normalised_in_graph,
            "size_divisor": self.size_divisor,
            "fixed_size": list(self.fixed_size) if self.fixed_size else None,
            "pad_value": list(self.pad_value),
        })

    @classmethod
    def from_parsed(cls, data: Mapping[str, Any]) -> "InputFormat":
        """From the value ``INPUT_FORMAT`` parsed (already checked)."""
        fixed = data.get("fixed_size")
        return cls(layout=data["layout"], color=data["color"], dtype=data["dtype"], scale=data["scale"],
                   mean=tuple(data["mean"]), std=tuple(data["std"]), normalised_in_graph=data["normalised_in_graph"],
                   size_divisor=data.get("size_divisor"), fixed_size=tuple(fixed) if fixed else None,
                   pad_value=tuple(data.get("pad_value", data["mean"])))

    @classmethod
    def from_json(cls, text: str) -> "InputFormat":
        try:
            return cls.from_parsed(METADATA_FIELDS["input_format"].spec.parse(text, "input_format"))
        except f.FieldError as exc:
            raise MetadataError(f"metadata {exc.path} {exc.problem}") from None


@dataclass(frozen=True)
class ModelInfo:
    """Parsed metadata of an exported file (see the module docstring for each key)."""

    schema_version: int
    aesipe_version: str
    torch_version: str
    model_kind: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    input_format: InputFormat
    output: dict[str, Any]
    inputs: tuple[dict[str, Any], ...]
    pamr: dict[str, Any] | None = None
    background_scale: float = 1.0
    opset: int | None = None
    precision: str = "float32"
    custom_ops: tuple[str, ...] = ()
    op_library: str | None = None
    raw: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    quantization: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        """Foreground class count C (``classes`` holds 1 + C names, background first)."""
        return len(self.classes) - 1

    @property
    def needs_tags(self) -> bool:
        """The pseudo-labeller takes the image's tags (multi-hot [B, C]) as a second input."""
        return self.model_kind == "pseudo_labeller"


def class_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a class name (the rule of exported files and of datasets), or None."""
    return CLASS_NAME.problem(name)


def build_metadata(
    *,
    model_kind: str,
    classes: list[str] | tuple[str, ...],
    palette: list | tuple,
    input_format: InputFormat,
    output: Mapping[str, Any],
    inputs: list[Mapping[str, Any]],
    aesipe_version: str,
    torch_version: str,
    pamr: Mapping[str, Any] | None = None,
    background_scale: float = 1.0,
    opset: int | None = None,
    precision: str = "float32",
    custom_ops: tuple[str, ...] = (),
    op_library: str | None = None,
) -> dict[str, str]:
    """Metadata as the flat ``{str: str}`` map both file formats store, checked as a reader checks it."""
    meta = {
        "producer": PRODUCER,
        "schema_version": str(SCHEMA_VERSION),
        "aesipe_version": aesipe_version,
        "torch_version": torch_version,
        "model_kind": model_kind,
        "classes": json.dumps(list(classes)),
        "palette": json.dumps([[int(c) for c in rgb] for rgb in palette]),
        "input_format": input_format.to_json(),
        "output": json.dumps(dict(output)),
        "inputs": json.dumps([dict(i) for i in inputs]),
        "pamr": json.dumps(dict(pamr)) if pamr else "",
        "background_scale": repr(float(background_scale)),
        "precision": precision,
    }
    if opset is not None:
        meta["opset"] = str(int(opset))
    if custom_ops:
        meta["custom_ops"] = json.dumps(list(custom_ops))
    if op_library:
        meta["op_library"] = op_library
    parse_metadata(meta, source="metadata to write", strict=True)
    return meta


def parse_metadata(meta: Mapping[str, str], source: str = "model file", strict: bool = False) -> ModelInfo:
    """Validate every key and parse; ``MetadataError`` says in one line what is wrong with ``source``.

    ``strict``: also refuse keys ``METADATA_FIELDS`` does not declare (what aesipe writes)."""
    if meta.get("producer") != PRODUCER:
        raise MetadataError(f"{source} was not made by aesipe-export (no aesipe metadata); export it with aesipe-export")
    missing = [key for key, member in METADATA_FIELDS.items() if member.required and key not in meta]
    if missing:
        raise MetadataError(f"{source}: aesipe metadata lacks {', '.join(missing)}")
    schema = str(meta["schema_version"]).strip()
    if schema.isascii() and schema.isdigit() and int(schema) > SCHEMA_VERSION:
        raise MetadataError(f"{source} uses metadata schema_version {schema}, newer than this aesipe understands "
                            f"({SCHEMA_VERSION}): upgrade aesipe")
    unknown = [key for key in meta if key not in METADATA_FIELDS]
    if strict and unknown:
        raise MetadataError(f"{source}: metadata key {unknown[0]!r} is not declared in aesipe.contract.METADATA_FIELDS")
    parsed: dict[str, Any] = {}
    try:
        for key, member in METADATA_FIELDS.items():
            if key in meta:
                parsed[key] = member.spec.parse(meta[key], key)
    except f.FieldError as exc:
        raise MetadataError(f"{source}: metadata {exc.path} {exc.problem}") from None
    for check in METADATA_CHECKS:
        problem = check.check(parsed)
        if problem:
            raise MetadataError(f"{source}: metadata {problem}")
    return ModelInfo(
        schema_version=parsed["schema_version"],
        aesipe_version=parsed["aesipe_version"],
        torch_version=parsed["torch_version"],
        model_kind=parsed["model_kind"],
        classes=tuple(parsed["classes"]),
        palette=tuple((r, g, b) for r, g, b in parsed["palette"]),
        input_format=InputFormat.from_parsed(parsed["input_format"]),
        output=parsed["output"],
        inputs=tuple(parsed["inputs"]),
        pamr=parsed.get("pamr"),
        background_scale=parsed.get("background_scale", 1.0),
        opset=parsed.get("opset"),
        precision=parsed.get("precision", "float32"),
        custom_ops=tuple(parsed.get("custom_ops", ())),
        op_library=parsed.get("op_library"),
        raw=dict(meta),
        quantization=parsed.get("quantization"),
    )
