"""Image files that lie about their size, made byte by byte (a few hundred bytes each, except the one
real single-colour PNG): the inputs of tests/core/test_decode_bound.py."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _ihdr(width: int, height: int) -> bytes:
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def png_header(path: Path, width: int, height: int) -> Path:
    """An RGB PNG whose header declares ``width`` x ``height``; its data holds four rows."""
    rows = zlib.compress((b"\x00" + b"\x80" * 3 * width) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _ihdr(width, height) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))
    return path


def png_single_colour(path: Path, width: int, height: int, rows_per_chunk: int = 256) -> Path:
    """A complete, valid RGB PNG of one colour, compressed while it is written (144 Mpx: about 420 KB)."""
    row = b"\x00" + bytes((30, 120, 200)) * width
    squeeze = zlib.compressobj(9)
    parts = [b"\x89PNG\r\n\x1a\n", _ihdr(width, height)]
    for start in range(0, height, rows_per_chunk):
        data = squeeze.compress(row * min(rows_per_chunk, height - start))
        if data:
            parts.append(_chunk(b"IDAT", data))
    parts += [_chunk(b"IDAT", squeeze.flush()), _chunk(b"IEND", b"")]
    path.write_bytes(b"".join(parts))
    return path


def gif_header(path: Path, width: int, height: int) -> Path:
    lzw = bytes([2, 2, 0x4C, 0x01, 0])  # code size 2, one tiny sub-block
    path.write_bytes(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
                     + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + lzw + b";")
    return path


def bmp_header(path: Path, width: int, height: int) -> Path:
    pixels = bytes(64)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    path.write_bytes(b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixels), 0, 0, 54) + info + pixels)
    return path


def tiff_header(path: Path, width: int, height: int) -> Path:
    """An uncompressed 8-bit grayscale TIFF declaring ``width`` x ``height`` in one strip of 64 bytes."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 8 + 4), (278, 4, 1, height), (279, 4, 1, width * height)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(64))
    return path


def _small(fmt: str, **kwargs) -> bytearray:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 20, 200)).save(buffer, fmt, **kwargs)
    return bytearray(buffer.getvalue())


def webp_header(path: Path, width: int, height: int) -> Path:
    """A lossy WebP whose VP8 frame header says ``width`` x ``height`` (at most 16383)."""
    data = _small("WEBP", quality=50)
    start = data.find(b"\x9d\x01\x2a")  # the VP8 key frame start code; width and height follow
    data[start + 3: start + 7] = struct.pack("<HH", width, height)
    path.write_bytes(bytes(data))
    return path


def jpeg_header(path: Path, width: int, height: int, progressive: bool = False) -> Path:
    data = _small("JPEG", progressive=progressive)
    marker = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[marker + 5: marker + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path
