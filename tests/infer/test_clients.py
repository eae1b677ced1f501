"""Other ways in: the Labeler API, the torch-free path, the plain-ORT and C++ clients, numpy resizing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from aesipe.infer import Labeler, label_folder
from aesipe.infer.postprocess import argmax_resized, resize_bilinear
from aesipe.utils.labelpng import load_label_png

REPO = Path(__file__).resolve().parents[2]
tiny = sys.modules["aesipe_tests_tiny_models"]


@pytest.mark.parametrize("src,dst", [((7, 9), (40, 56)), ((40, 56), (13, 11)), ((5, 5), (5, 17))])
def test_numpy_resize_matches_torch_bilinear(src, dst):
    scores = np.random.default_rng(0).normal(size=(4, *src)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(scores)[None], size=dst, mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(resize_bilinear(scores, *dst), expected.numpy(), atol=1e-5)
    assert (argmax_resized(scores, *dst) == expected.argmax(0).numpy()).all()


def test_labeler_on_arrays_paths_and_tags(seg_onnx, pl_onnx, tmp_path):
    rgb = tiny.smooth_rgb(45, 61)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    labeler = Labeler(seg_onnx)
    from_array, from_path = labeler.label(rgb), labeler.label(tmp_path / "x.png")
    assert from_array.shape == (45, 61) and from_array.dtype == np.uint8 and (from_array == from_path).all()
    assert labeler.info.classes == tuple(tiny.CLASSES) and labeler.providers == ["CPUExecutionProvider"]
    pseudo = Labeler(pl_onnx)
    assert set(np.unique(pseudo.label(rgb, tags=["dog"]))) <= {0, 2}
    with pytest.raises(Exception, match="needs the image's tags"):
        pseudo.label(rgb)


def test_label_folder_api_returns_the_report(seg_onnx, photo_folder, tmp_path):
    report = label_folder(seg_onnx, photo_folder, tmp_path, progress=False)
    assert report.ok == 5 and report.exit_code == 0 and (tmp_path / "report.json").is_file()


def test_onnx_labelling_runs_with_torch_blocked(seg_onnx, photo_folder, tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from aesipe.infer import label_folder\n"
        f"r = label_folder({str(seg_onnx)!r}, {str(photo_folder)!r}, {str(tmp_path)!r}, progress=False)\n"
        "assert not any(m.startswith(('aesipe.train', 'aesipe.models', 'aesipe.export')) for m in sys.modules)\n"
        "print(r.ok)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "5"


def test_plain_ort_client_matches_aesipe_label(seg_onnx, pl_onnx, photo_folder, tmp_path):
    label_folder(seg_onnx, photo_folder, tmp_path / "seg", progress=False)
    client = REPO / "examples" / "ort_client.py"
    for rel in ("a.jpg", "sub/c.JPG"):
        out = tmp_path / (Path(rel).stem + "_client.png")
        # -I: isolated, so the client cannot import aesipe from the checkout even by accident.
        run = subprocess.run([sys.executable, "-I", str(client), str(seg_onnx), str(photo_folder / rel), str(out)],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        ours = load_label_png(tmp_path / "seg" / "masks" / Path(rel).with_suffix(".png"))
        assert (load_label_png(out) == ours).all()
    out = tmp_path / "pl_client.png"
    run = subprocess.run([sys.executable, "-I", str(client), str(pl_onnx), str(photo_folder / "a.jpg"), str(out),
                          "--tags", "cat,car"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    expected = Labeler(pl_onnx).label(photo_folder / "a.jpg", tags=["cat", "car"])
    assert (load_label_png(out) == expected).all()


def _cmake_args() -> list[str]:
    site = Path(torch.__file__).parents[1]
    args = [f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", "-DCMAKE_BUILD_TYPE=Release"]
    nvrtc = site / "nvidia" / "cu13" / "lib" / "libnvrtc.so.13"
    if torch.version.cuda:  # CUDA wheels: CMake's FindCUDA needs the toolkit and the wheel's nvrtc
        args += ["-DCUDA_TOOLKIT_ROOT_DIR=/usr/local/cuda", f"-DCUDA_nvrtc_LIBRARY={nvrtc}"]
    return args


@pytest.mark.slow
def test_cpp_example_matches_python(seg_torchscript, photo_folder, tmp_path):
    if not shutil.which("cmake") or not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("cmake or a C++ compiler is missing")
    build = tmp_path / "build"
    configure = subprocess.run(["cmake", "-S", str(REPO / "examples" / "cpp"), "-B", str(build), *_cmake_args()],
                               capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout[-2000:] + configure.stderr[-2000:]
    built = subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-2000:]
    labeler = Labeler(seg_torchscript)
    for rel in ("a.jpg", "sub/deeper/e.bmp"):
        ppm = tmp_path / (Path(rel).stem + ".ppm")
        Image.open(photo_folder / rel).convert("RGB").save(ppm)
        pgm = tmp_path / (Path(rel).stem + ".pgm")
        run = subprocess.run([str(build / "aesipe_label_cpp"), str(seg_torchscript), str(ppm), str(pgm)],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert (np.array(Image.open(pgm)) == labeler.label(ppm)).all()
