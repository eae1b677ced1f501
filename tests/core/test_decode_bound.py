"""One image never takes the process down: a decode that would take more than ``MAX_DECODE_BYTES`` is decoded at
reduced size where the format allows it and refused with its reason otherwise, before any pixel is decoded.

Hostile files are made here byte by byte (``hostile_images.py``); every read runs in a child process whose
peak memory (``VmHWM``) is measured, under an address-space limit so a regression fails instead of
swapping the machine.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aesipe import imaging

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory is read from /proc")
REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("aesipe_tests_hostile_images", Path(__file__).with_name("hostile_images.py"))
hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile)
GiB = 1024**3
_CHILD = """
import json, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from aesipe import imaging
{setup}
def rss():  # this process's own peak (getrusage's ru_maxrss would start at the parent's, kept across exec)
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024
base, results = rss(), {{}}
for name, side in {cases!r}:
    try:
        decoded = imaging.read_image(Path(name), side)
        results[name] = "decoded " + "x".join(map(str, decoded.rgb.shape))
    except imaging.ImageReadError as exc:
        results[name] = str(exc)
    except MemoryError:
        results[name] = "MemoryError"
print(json.dumps({{"results": results, "grew": rss() - base}}))
"""


def _read_in_child(cases: list[tuple[Path, int | None]], setup: str = "", limit: int = 3 * GiB) -> dict:
    code = _CHILD.format(limit=limit, setup=setup, cases=[(str(p), side) for p, side in cases])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


HEADERS = {  # (maker, width, height, max_side)
    "png": (hostile.png_header, 30000, 30000, 2048),
    "gif": (hostile.gif_header, 30000, 30000, 2048),
    "bmp": (hostile.bmp_header, 30000, 30000, 2048),
    "tiff": (hostile.tiff_header, 30000, 30000, 2048),
    "webp": (hostile.webp_header, 16383, 16383, 2048),
    "progressive jpeg": (lambda p, w, h: hostile.jpeg_header(p, w, h, progressive=True), 30000, 30000, 2048),
    "baseline jpeg at full size": (hostile.jpeg_header, 30000, 30000, None),
}


def test_hostile_headers_are_refused_before_any_pixel_is_decoded(tmp_path):
    suffix = {"png": ".png", "gif": ".gif", "bmp": ".bmp", "tiff": ".tif", "webp": ".webp"}
    cases = [(maker(tmp_path / f"{name.replace(' ', '_')}{suffix.get(name, '.jpg')}", w, h), side)
             for name, (maker, w, h, side) in HEADERS.items()]
    assert all(path.stat().st_size < 1000 for path, _ in cases)
    child = _read_in_child(cases)
    for (path, _), name in zip(cases, HEADERS):
        reason = child["results"][str(path)]
        assert "MAX_DECODE_BYTES" in reason and "GiB to decode" in reason, f"{name}: {reason}"
    assert child["grew"] < 64 * 1024**2, child


def test_a_baseline_jpeg_is_decoded_at_reduced_size_instead(tmp_path):
    """A 20000 x 20000 JPEG header, refused at full size, is decoded at 1/8 in draft mode with a max_side (its
    few hundred bytes hold no real pixels: libjpeg fills them in grey, a decode, not a refusal)."""
    path = hostile.jpeg_header(tmp_path / "big.jpg", 20000, 20000)
    child = _read_in_child([(path, 256)])  # at full size: test_hostile_headers_are_refused_...
    reduced = child["results"][str(path)]
    assert reduced in ("decoded 256x256x3",) or "truncated" in reduced, reduced
    assert child["grew"] < 200 * 1024**2, child


def test_a_real_single_colour_png_over_the_bound_is_refused_with_bounded_memory(tmp_path):
    """The issue's case: a small, complete PNG (about 420 KB) that decodes to 144 Mpx (~2 GB in the decoder)."""
    path = hostile.png_single_colour(tmp_path / "one_colour.png", 12000, 12000)
    assert path.stat().st_size < 2 * 1024**2
    same = tmp_path / "same.png"
    same.write_bytes(path.read_bytes())
    child = _read_in_child([(path, 2048), (same, None)])  # labelling's max_side, then training's full size
    assert len(child["results"]) == 2
    for reason in child["results"].values():
        assert re.search(r"12000x12000 PNG would take 2\.\d GiB to decode, over the 2 GiB one image may take "
                         r"\(aesipe.imaging.MAX_DECODE_BYTES\)", reason), reason
    assert child["grew"] < 64 * 1024**2, child


def _smooth(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x // 7) % 256, (y // 5) % 256, ((x + y) // 9) % 256], -1).astype(np.uint8)


def test_a_smaller_bound_refuses_by_the_same_rule_and_jpeg_draft_fits_under_it(tmp_path):
    rgb = _smooth(1500, 2000)
    png, jpeg, small = tmp_path / "photo.png", tmp_path / "photo.jpg", tmp_path / "same_photo.jpg"
    Image.fromarray(rgb).save(png, compress_level=1)
    Image.fromarray(rgb).save(jpeg, quality=90)
    small.write_bytes(jpeg.read_bytes())
    # 3 Mpx x 15 B + 8 MiB = 53 MB at full size; at max_side 256 draft mode decodes 1/2: 1000 x 750, 19 MB.
    child = _read_in_child([(png, 256), (jpeg, None), (small, 256)], setup="imaging.MAX_DECODE_BYTES = 24 * 1024**2")
    results = child["results"]
    assert "MAX_DECODE_BYTES" in results[str(png)] and "MAX_DECODE_BYTES" in results[str(jpeg)], results
    assert results[str(small)] == "decoded 192x256x3", results
    assert child["grew"] < 32 * 1024**2, child


# ---- the per-pixel figures are upper bounds of what the decoder really takes ------------------------------
def _calibration_image(path: Path, mode: str, rgb: np.ndarray, **save) -> Path:
    image = Image.fromarray(rgb)
    if mode == "I;16":
        image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    elif mode == "F":
        image = Image.fromarray(rgb[..., 0].astype(np.float32) / 255)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, **save)
    return path


CALIBRATION = [
    ("RGB", "rgb.png", {"compress_level": 1}), ("RGB", "rgb.jpg", {"quality": 90}),
    ("RGB", "prog.jpg", {"quality": 90, "progressive": True, "subsampling": 0}), ("RGBA", "rgba.png", {}),
    ("L", "l.png", {}), ("P", "p.gif", {}), ("1", "one.png", {}), ("LA", "la.png", {}), ("I;16", "i16.png", {}),
    ("CMYK", "cmyk.tif", {}), ("F", "f.tif", {}), ("RGB", "rgb.webp", {"lossless": True, "method": 0}),
    ("RGB", "rgb.bmp", {}), ("RGB", "rot.png", {"exif": b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12"
                                                        b"\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00"}),
]


@pytest.mark.parametrize("mode, name, save", CALIBRATION, ids=[c[1] for c in CALIBRATION])
def test_the_estimate_bounds_the_real_decode(tmp_path, mode, name, save):
    path = _calibration_image(tmp_path / name, mode, _smooth(1200, 1600), **save)
    with Image.open(path) as image:
        estimate = imaging.decode_bytes(image)
    grew = _read_in_child([(path, None)], limit=8 * GiB)["grew"]
    # ru_maxrss counts whole pages and the allocator's slack: a few MB of noise over 20-60 MB.
    assert grew <= estimate + 2 * 1024**2, f"{name}: decoding took {grew / 2**20:.1f} MB, estimated {estimate / 2**20:.1f}"
    assert grew >= estimate / 3, f"{name}: the estimate {estimate / 2**20:.1f} MB is far above {grew / 2**20:.1f}"


# ---- through aesipe-label: the rest of the folder is labelled, the reason is in the report ------------------
def test_aesipe_label_refuses_the_image_labels_the_rest_and_stays_small(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    hostile.png_single_colour(photos / "bomb.png", 12000, 12000)
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(_smooth(48, 64)).save(photos / name)
    rss_file = tmp_path / "peak"
    code = ("import atexit, sys\n"  # the process's peak resident memory (kB), written when it exits
            f"atexit.register(lambda: open({str(rss_file)!r}, 'w').write(open('/proc/self/status').read()"
            ".split('VmHWM:')[1].split()[0]))\n"
            "from aesipe.infer.cli import main\n"
            f"sys.argv = ['aesipe-label', {str(REPO / 'tests/fixtures/tiny_segmenter.onnx')!r}, {str(photos)!r}, "
            f"{str(tmp_path / 'out')!r}]\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "bomb.png" in done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    failed = json.dumps(report)
    assert report["images"]["bomb.png"]["status"] == "failed" and report["summary"]["ok"] == 2, failed[:2000]
    assert "GiB to decode" in report["images"]["bomb.png"]["reason"]
    assert sorted(p.name for p in (tmp_path / "out" / "masks").glob("*.png")) == ["a.png", "b.png"]
    assert int(rss_file.read_text()) * 1024 < 1 * GiB  # the decode alone would take ~2 GB
