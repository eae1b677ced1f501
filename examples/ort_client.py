"""Label one image with an aesipe ONNX file using only numpy, Pillow and onnxruntime (no aesipe).

    python ort_client.py segmenter.onnx photo.jpg photo_labels.png
    python ort_client.py pseudo_labeller.onnx photo.jpg out.png --tags cat,person

Everything the client needs (pre-processing, classes, palette) is read from the file's metadata.
"""
from __future__ import annotations

import argparse
import json

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("image")
    parser.add_argument("output", help="palette PNG of class indices")
    parser.add_argument("--tags", default="", help="comma-separated class names (pseudo-labellers)")
    args = parser.parse_args()

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("producer") != "aesipe-export":
        raise SystemExit(f"{args.model} was not made by aesipe-export")
    fmt, classes = json.loads(meta["input_format"]), json.loads(meta["classes"])
    with Image.open(args.image) as image:
        batch, height, width = preprocess(image, fmt)
    feeds = {"image": batch}
    if meta["model_kind"] == "pseudo_labeller":
        tags = np.zeros((1, len(classes) - 1), dtype=np.float32)
        for name in filter(None, args.tags.split(",")):
            tags[0, classes.index(name) - 1] = 1.0
        feeds["tags"] = tags
    labels = session.run(["labels"], feeds)[0][0, :height, :width]

    palette = np.zeros((256, 3), dtype=np.uint8)
    colours = np.array(json.loads(meta["palette"]), dtype=np.uint8).reshape(-1, 3)[:256]
    palette[: len(colours)] = colours
    out = Image.fromarray(np.ascontiguousarray(labels.astype(np.uint8)))
    out.putpalette(palette.flatten().tolist())  # an "L" image becomes "P": values stay class indices
    out.save(args.output)
    present = [classes[i] for i in np.unique(labels)]
    print(f"{args.output}: {width}x{height}, classes {', '.join(present)}")


if __name__ == "__main__":
    main()
