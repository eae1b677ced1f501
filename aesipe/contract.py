"""The export metadata contract: what an exported graph file must carry so that a client needs nothing else.

Written by ``aesipe-export`` (ONNX ``metadata_props``; TorchScript extra file ``aesipe.json``) and read by
``aesipe-label`` and any third-party client. Every value is a string; structured values are JSON.
Standard library only: the torch-free labelling side imports this module.

Every key is declared once, in ``METADATA_FIELDS`` (``aesipe.contract_table``, re-exported here), with the
spec that checks its type, range and structure (``aesipe.contract_fields``), and the rules between keys in
``METADATA_CHECKS``. Reading a file runs them all before anything else, so any malformed value ends in one
``MetadataError`` line naming the key; ``build_metadata`` runs the same checks on what it writes (a file aesipe writes is one it can read)
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
from .constants import IMAGENET_MEAN, IMAGENET_STD, PIXEL_SCALE
from .contract_table import (  # noqa: F401 - the table's names are part of this module's interface
    CLASS_NAME,
    CRF,
    CUSTOM_OPS,
    DESCRIPTION,
    DILATIONS,
    EXTRA_FILE,
    INPUT,
    INPUT_FORMAT,
    MAX_FIXED_SIDE,
    MAX_SIZE_DIVISOR,
    METADATA_CHECKS,
    METADATA_FIELDS,
    MODEL_KINDS,
    NAME,
    OUTPUT,
    OUTPUT_KINDS,
    OUTPUT_NAMES,
    PAMR,
    PRECISIONS,
    PRODUCER,
    QUANTIZATION,
    SCHEMA_VERSION,
    SOURCE,
    TEST_TIME,
    TRIPLE,
)


class MetadataError(ValueError):
    """The file lacks aesipe metadata, has a newer schema, or the metadata is malformed."""


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
    source: Mapping[str, Any] | None = None,
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
    if source:
        meta["source"] = json.dumps(dict(source))
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
