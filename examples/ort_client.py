"""Label one image with an aesipe ONNX file using only numpy, Pillow and onnxruntime (no aesipe).

    python ort_client.py segmenter.onnx photo.jpg photo_labels.png
    python ort_client.py pseudo_labeller.onnx photo.jpg out.png --tags cat,person

Everything the client needs (pre-processing, classes, palette) is read from the file's metadata.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def preprocess(image: Image.Image, fmt: dict) -> tuple[np.ndarray, int, int]:
    """uint8 RGB -> the graph's padded [1, 3, Hp, Wp] float32 input, plus the image's size."""
    rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.float32)
    height, width = rgb.shape[:2]
    x = rgb * fmt["scale"]
    pad = np.array(fmt["pad_value"], dtype=np.float32)
    if not fmt.get("normalised_in_graph", False):
        mean, std = np.array(fmt["mean"], np.float32), np.array(fmt["std"], np.float32)
        x, pad = (x - mean) / std, (pad - mean) / std
    div = fmt.get("size_divisor") or 1
    padded_h, padded_w = -(-height // div) * div, -(-width // div) * div
    batch = np.empty((1, 3, padded_h, padded_w), dtype=np.float32)
    batch[:] = pad[None, :, None, None]
    batch[0, :, :height, :width] = x.transpose(2, 0, 1)
    return batch, height, width


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and an exit code: what a user's mistake deserves (never a traceback)."""
    print(f"ort_client.py: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def open_model(path: str) -> ort.InferenceSession:
    if not os.path.isfile(path):
        fail(f"{path} is a folder: give the .onnx file" if os.path.isdir(path) else f"model file not found: {path}")
    try:
        return ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        fail(f"cannot load {path} with onnxruntime: {str(exc).splitlines()[0][:160]}")


def read_image(path: str, fmt: dict) -> tuple[np.ndarray, int, int]:
    if not os.path.isfile(path):
        fail(f"{path} is a folder: give one image file" if os.path.isdir(path) else f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return preprocess(image, fmt)
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow: not an image, truncated, corrupt
        fail(f"cannot read image {path}: {str(exc).splitlines()[0][:160]}", 1)


def tag_vector(text: str, classes: list[str]) -> np.ndarray:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        fail("this model is a pseudo-labeller: give the image's classes with --tags name1,name2")
    tags = np.zeros((1, len(classes) - 1), dtype=np.float32)
    for name in names:
        if name not in classes[1:]:
            fail(f"unknown class {name!r}: the model knows {', '.join(classes[1:])}")
        tags[0, classes.index(name) - 1] = 1.0
    return tags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("image")
    parser.add_argument("output", help="palette PNG of class indices")
    parser.add_argument("--tags", default="", help="comma-separated class names (pseudo-labellers)")
    args = parser.parse_args()

    session = open_model(args.model)
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("producer") != "aesipe-export":
        fail(f"{args.model} was not made by aesipe-export (it has no aesipe metadata)")
    fmt, classes = json.loads(meta["input_format"]), json.loads(meta["classes"])
    batch, height, width = read_image(args.image, fmt)
    feeds = {"image": batch}
    if meta["model_kind"] == "pseudo_labeller":
        feeds["tags"] = tag_vector(args.tags, classes)
    labels = session.run(["labels"], feeds)[0][0, :height, :width]

    palette = np.zeros((256, 3), dtype=np.uint8)
    colours = np.array(json.loads(meta["palette"]), dtype=np.uint8).reshape(-1, 3)[:256]
    palette[: len(colours)] = colours
    out = Image.fromarray(np.ascontiguousarray(labels.astype(np.uint8)))
    out.putpalette(palette.flatten().tolist())  # an "L" image becomes "P": values stay class indices
    try:
        out.save(args.output)
    except OSError as exc:
        fail(f"cannot write {args.output}: {exc.strerror or exc}", 1)
    present = [classes[i] for i in np.unique(labels)]
    print(f"{args.output}: {width}x{height}, classes {', '.join(present)}")


if __name__ == "__main__":
    main()
