"""Label Studio's brush RLE (aesipe.labelstudio_rle), held to Label Studio's own SDK both ways, pixel-exact."""
from __future__ import annotations

import numpy as np
import pytest

from aesipe.labelstudio_rle import BrushDecodeError, decode_mask, decode_values, encode_mask

# label_studio_sdk.converter.brush.mask2rle([[0, 255, 255], [0, 0, 255]]) (label-studio-sdk 2.1.2): checked in
# so the codec is held to the SDK's bytes even where the SDK is not installed.
SDK_SMALL = [0, 0, 0, 24, 57, 27, 252, 96, 19, 255, 206, 1, 31, 248]
SMALL = np.array([[0, 1, 1], [0, 0, 1]], bool)


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    blob = np.zeros((57, 83), bool)
    blob[10:40, 5:60] = True
    long_runs = np.zeros((40, 2000), bool)  # runs past the widest field (65536 values) are split
    long_runs[:, 3:1990] = True
    return [SMALL, blob, rng.random((31, 45)) < 0.5, np.ones((20, 30), bool), np.zeros((20, 30), bool),
            np.ones((1, 1), bool), long_runs]


def test_the_sdks_bytes_decode_to_the_mask_and_ours_equal_them():
    assert np.array_equal(decode_mask(SDK_SMALL, 2, 3), SMALL)
    ours = encode_mask(SMALL)
    # The SDK pads a stream that ends on a byte boundary with one more zero byte; the bits are the same.
    assert ours == SDK_SMALL[: len(ours)] and all(b == 0 for b in SDK_SMALL[len(ours):])


@pytest.mark.parametrize("index", range(len(_masks())))
def test_round_trip(index):
    mask = _masks()[index]
    assert np.array_equal(decode_mask(encode_mask(mask), *mask.shape), mask)


def test_the_sdk_decodes_every_mask_we_encode_pixel_exact(labelstudio_sdk):
    masks = _masks()
    decoded = labelstudio_sdk.decode([(encode_mask(m), *m.shape) for m in masks])
    for mask, alpha in zip(masks, decoded):
        assert np.array_equal(alpha, np.where(mask, 255, 0))


def test_we_decode_every_mask_the_sdk_encodes_pixel_exact(labelstudio_sdk):
    masks = _masks()
    for mask, rle in zip(masks, labelstudio_sdk.encode([np.where(m, 255, 0) for m in masks])):
        assert np.array_equal(decode_mask(rle, *mask.shape), mask)


def test_literal_runs_and_other_word_sizes_decode():
    # Label Studio's own encoder (thi.ng rle-pack) also writes literal runs: flag 0, then each value.
    bits = f"{6:032b}" + f"{8 - 1:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))
    bits += "0" + "00" + f"{3 - 1:03b}" + "00000001" + "11111111" + "00000010"  # 3 literals: 1, 255, 2
    bits += "1" + "00" + f"{3 - 1:03b}" + "00000111"  # 7 three times
    bits += "0" * (-len(bits) % 8)
    rle = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
    assert decode_values(rle, 6).tolist() == [1, 255, 2, 7, 7, 7]


@pytest.mark.parametrize("rle, message", [
    (SDK_SMALL[:3], "shorter than its header"),
    (SDK_SMALL[:8], "ends after"),
    ([0, 0, 0, 25] + SDK_SMALL[4:], "holds 25 values"),
    ([300], "byte values"),
])
def test_bad_streams_are_one_clear_error(rle, message):
    with pytest.raises(BrushDecodeError, match=message):
        decode_mask(rle, 2, 3)
