"""Label Studio's brush masks: the run-length code of its ``BrushLabels`` results, both ways.

A brush result carries ``value.rle``: a list of bytes, the bit stream of thi.ng's ``rle-pack`` over the
mask's RGBA pixels flattened row by row (H x W x 4 values; Label Studio reads the alpha channel). The stream:
32 bits value count, 5 bits word size - 1, four 4-bit run-length field sizes - 1, then chunks of
``flag(1) size-index(2) length-1(size)`` followed by one value (flag 1: the value repeated) or ``length``
values (flag 0: literals), each ``word size`` bits.

Written here rather than taken from ``label-studio-sdk`` (its ``converter.brush`` has the same code as Python
bit strings): the SDK pins ``opencv-python-headless<4.13`` and, through it, numpy below the versions aesipe
installs, and pulls ~40 packages (httpx, pydantic, pandas, nltk, lxml, datamodel-code-generator, ...) into a
labelling install that is otherwise numpy, Pillow and ONNX Runtime. The tests hold both directions to the
SDK's own functions, pixel-exact (``tests/review/test_labelstudio_rle.py``). numpy only.
"""
from __future__ import annotations

import numpy as np

WORD_SIZE = 8
RUN_SIZES = (3, 4, 8, 16)
"""Bits of the run-length field, by the 2-bit index: Label Studio's and the SDK's choice."""
CHANNELS = 4  # RGBA
_MAX_RUN = 1 << RUN_SIZES[-1]


class BrushDecodeError(ValueError):
    """A brush RLE that cannot be a mask of the given size; ``str(exc)`` says why."""


def _pack_fields(values: np.ndarray, widths: np.ndarray) -> list[int]:
    """Concatenate unsigned ``values`` of ``widths`` bits (most significant bit first) into bytes, zero-padded."""
    values = values.astype(np.uint64)
    widths = widths.astype(np.int64)
    total = int(widths.sum())
    field = np.repeat(np.arange(len(widths)), widths)
    starts = np.cumsum(widths) - widths
    offset = np.arange(total, dtype=np.int64) - starts[field]
    shift = (widths[field] - 1 - offset).astype(np.uint64)
    bits = ((values[field] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tolist()  # packbits pads the last byte with zeros


def encode_mask(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE of a boolean H x W mask (True = painted: RGBA 255, 255, 255, 255; else 0)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a brush mask must be 2-D (H, W), got shape {mask.shape}")
    pixels = np.repeat(np.where(mask.ravel(), 255, 0).astype(np.uint8), CHANNELS)
    count = len(pixels)
    if count >= 1 << 32:
        raise ValueError("mask too large for Label Studio's 32-bit value count")
    header_values = [count, WORD_SIZE - 1, *(s - 1 for s in RUN_SIZES)]
    header_widths = [32, 5, 4, 4, 4, 4]
    if count == 0:
        return _pack_fields(np.array(header_values), np.array(header_widths))
    change = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [count]]))
    run_values = pixels[starts]
    # Runs longer than the widest field are cut into full chunks and a remainder.
    chunks = (lengths + _MAX_RUN - 1) // _MAX_RUN
    chunk_run = np.repeat(np.arange(len(lengths)), chunks)
    chunk_index = np.arange(len(chunk_run)) - np.repeat(np.cumsum(chunks) - chunks, chunks)
    chunk_len = np.minimum(lengths[chunk_run] - chunk_index * _MAX_RUN, _MAX_RUN)
    size_index = np.searchsorted(np.array([1 << s for s in RUN_SIZES]), chunk_len)  # smallest field that fits
    size_bits = np.array(RUN_SIZES)[size_index]
    n = len(chunk_len)
    fields = np.stack([np.ones(n, np.int64), size_index, chunk_len - 1, run_values[chunk_run]], axis=1).ravel()
    widths = np.stack([np.ones(n, np.int64), np.full(n, 2), size_bits, np.full(n, WORD_SIZE)], axis=1).ravel()
    return _pack_fields(np.concatenate([header_values, fields]), np.concatenate([header_widths, widths]))


_BIT_CHARS = bytes.maketrans(b"\x00\x01", b"01")


def decode_values(rle: list[int] | bytes, expected: int) -> np.ndarray:
    """The values a brush RLE holds (uint32, flat); ``expected`` values or ``BrushDecodeError``."""
    try:
        data = np.frombuffer(bytes(bytearray(rle)), dtype=np.uint8)
    except (TypeError, ValueError):
        raise BrushDecodeError("rle must be a list of byte values 0-255") from None
    bits = np.unpackbits(data).tobytes().translate(_BIT_CHARS).decode("ascii")
    end = len(bits)
    if end < 53:
        raise BrushDecodeError("rle is shorter than its header")
    count = int(bits[0:32], 2)
    if count != expected:
        raise BrushDecodeError(f"rle holds {count} values, the image needs {expected} (width x height x 4)")
    word = int(bits[32:37], 2) + 1
    sizes = [int(bits[37 + 4 * k : 41 + 4 * k], 2) + 1 for k in range(4)]
    out = np.zeros(count, dtype=np.uint32)
    weights = (1 << np.arange(word - 1, -1, -1, dtype=np.uint64)).astype(np.uint64)
    pos, i = 53, 0
    while i < count:
        if pos + 3 > end:
            raise BrushDecodeError(f"rle ends after {i} of {count} values")
        repeat = bits[pos] == "1"
        size = sizes[int(bits[pos + 1 : pos + 3], 2)]
        pos += 3
        if pos + size > end:
            raise BrushDecodeError(f"rle ends after {i} of {count} values")
        length = int(bits[pos : pos + size], 2) + 1
        pos += size
        if i + length > count:
            raise BrushDecodeError(f"a run passes the end of the mask ({i + length} > {count} values)")
        need = word if repeat else word * length
        if pos + need > end:
            raise BrushDecodeError(f"rle ends after {i} of {count} values")
        if repeat:
            out[i : i + length] = int(bits[pos : pos + word], 2)
        else:
            chunk = np.frombuffer(bits[pos : pos + need].encode("ascii"), dtype=np.uint8) - ord("0")
            out[i : i + length] = (chunk.reshape(length, word).astype(np.uint64) @ weights).astype(np.uint32)
        pos += need
        i += length
    return out


def decode_mask(rle: list[int] | bytes, height: int, width: int, threshold: int = 128) -> np.ndarray:
    """Boolean H x W: the pixels whose alpha is at least ``threshold`` (Label Studio draws brush strokes
    opaque; their anti-aliased rims are partly transparent)."""
    values = decode_values(rle, height * width * CHANNELS)
    return values.reshape(height, width, CHANNELS)[:, :, 3] >= threshold
