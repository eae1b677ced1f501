"""The export metadata contract: what an exported graph file must carry so that a client needs nothing else.

Written by ``aesipe-export`` (ONNX ``metadata_props``; TorchScript extra file ``aesipe.json``) and read by
``aesipe-label`` and any third-party client. Every value is a string; structured values are JSON.
Standard library only: the torch-free labelling side imports this module.

Keys: ``producer`` (always "aesipe-export"), ``schema_version``, ``aesipe_version``, ``torch_version``,
``opset`` (ONNX only), ``precision`` (float32 | float16: the arithmetic inside; the graph's inputs and
outputs stay float32), ``model_kind`` (segmenter | pseudo_labeller), ``classes`` (JSON list; index =
label value, background first), ``palette`` (JSON list of [r, g, b]), ``input_format``, ``output``,
``inputs``, ``pamr`` (JSON object, or "" when not in the graph), ``background_scale``, ``custom_ops``
(JSON list of op names the file calls, e.g. ["aesipe::pamr"]; TorchScript only) and ``op_library``
(path of the library holding them on the exporting machine; a hint, the loader may find its own).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .constants import IMAGENET_MEAN, IMAGENET_STD, PIXEL_SCALE, PROG_EXPORT

PRODUCER = PROG_EXPORT
SCHEMA_VERSION = 1
MODEL_KINDS = ("segmenter", "pseudo_labeller")
EXTRA_FILE = "aesipe.json"
"""Name of the TorchScript extra file that holds the metadata (a JSON object of the same strings)."""

_REQUIRED = (
    "producer", "schema_version", "aesipe_version", "torch_version", "model_kind", "classes",
    "palette", "input_format", "output", "inputs",
)


class MetadataError(ValueError):
    """The file lacks aesipe metadata, has a newer schema, or the metadata is malformed."""


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
    def from_json(cls, text: str) -> "InputFormat":
        data = _json(text, "input_format", dict)
        try:
            fixed = data.get("fixed_size")
            return cls(
                layout=str(data["layout"]), color=str(data["color"]), dtype=str(data["dtype"]),
                scale=float(data["scale"]), mean=_triple(data["mean"]), std=_triple(data["std"]),
                normalised_in_graph=bool(data.get("normalised_in_graph", False)),
                size_divisor=int(data["size_divisor"]) if data.get("size_divisor") else None,
                fixed_size=(int(fixed[0]), int(fixed[1])) if fixed else None,
                pad_value=_triple(data.get("pad_value", data["mean"])),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise MetadataError(f"malformed input_format metadata ({exc!r})") from None


def _triple(value: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in value)
    return (a, b, c)


def _json(text: str, key: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise MetadataError(f"metadata {key!r} is not valid JSON") from None
    if not isinstance(value, kind):
        raise MetadataError(f"metadata {key!r} must be a JSON {kind.__name__}")
    return value


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

    @property
    def num_classes(self) -> int:
        """Foreground class count C (``classes`` holds 1 + C names, background first)."""
        return len(self.classes) - 1

    @property
    def needs_tags(self) -> bool:
        """The pseudo-labeller takes the image's tags (multi-hot [B, C]) as a second input."""
        return self.model_kind == "pseudo_labeller"


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
    """Metadata as the flat ``{str: str}`` map both file formats store."""
    if model_kind not in MODEL_KINDS:
        raise MetadataError(f"model_kind must be one of {MODEL_KINDS}, got {model_kind!r}")
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
    parse_metadata(meta)  # a file we write must be one we can read
    return meta


def parse_metadata(meta: Mapping[str, str], source: str = "model file") -> ModelInfo:
    """Validate and parse; ``MetadataError`` says plainly what is wrong with ``source``."""
    if meta.get("producer") != PRODUCER:
        raise MetadataError(f"{source} was not made by aesipe-export (no aesipe metadata); export it with aesipe-export")
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise MetadataError(f"{source}: aesipe metadata lacks {', '.join(missing)}")
    try:
        schema = int(meta["schema_version"])
    except ValueError:
        raise MetadataError(f"{source}: schema_version {meta['schema_version']!r} is not an integer") from None
    if schema > SCHEMA_VERSION:
        raise MetadataError(
            f"{source} uses metadata schema {schema}, newer than this aesipe understands ({SCHEMA_VERSION}): upgrade aesipe"
        )
    kind = meta["model_kind"]
    if kind not in MODEL_KINDS:
        raise MetadataError(f"{source}: unknown model_kind {kind!r}")
    classes = _json(meta["classes"], "classes", list)
    palette = _json(meta["palette"], "palette", list)
    if len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise MetadataError(f"{source}: 'classes' must list background and at least one class name")
    try:
        colours = tuple((int(r), int(g), int(b)) for r, g, b in palette)
    except (TypeError, ValueError):
        raise MetadataError(f"{source}: 'palette' must be a list of [r, g, b]") from None
    output = _json(meta["output"], "output", dict)
    if output.get("kind") not in ("logits", "probabilities", "scores", "labels"):
        raise MetadataError(f"{source}: unknown output kind {output.get('kind')!r}")
    return ModelInfo(
        schema_version=schema,
        aesipe_version=meta["aesipe_version"],
        torch_version=meta["torch_version"],
        model_kind=kind,
        classes=tuple(classes),
        palette=colours,
        input_format=InputFormat.from_json(meta["input_format"]),
        output=output,
        inputs=tuple(_json(meta["inputs"], "inputs", list)),
        pamr=_json(meta["pamr"], "pamr", dict) if meta.get("pamr") else None,
        background_scale=float(meta.get("background_scale", "1.0")),
        opset=int(meta["opset"]) if meta.get("opset") else None,
        precision=meta.get("precision", "float32"),
        custom_ops=tuple(_json(meta["custom_ops"], "custom_ops", list)) if meta.get("custom_ops") else (),
        op_library=meta.get("op_library") or None,
        raw=dict(meta),
    )
