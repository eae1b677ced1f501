"""A model file is data, never code (issue: trust by construction): whatever a file's metadata names, the only
compiled library aesipe-label ever loads is aesipe's own, found by aesipe's loader; and a file whose metadata
does not describe its graph is refused in one line before any image is read."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from aesipe.contract import EXTRA_FILE
from aesipe.infer.cli import app

runner = CliRunner()
MARKER = "library-constructor-ran"
EVIL_C = f"""
#include <stdio.h>
__attribute__((constructor)) static void ran(void) {{
    FILE *f = fopen("{MARKER}", "w");
    if (f) {{ fputs("code from a model file ran", f); fclose(f); }}
}}
"""


def _label_subprocess(cwd: Path, *args) -> subprocess.CompletedProcess:
    code = (f"import sys\nfrom aesipe.infer.cli import main\nsys.argv = ['aesipe-label', *{[str(a) for a in args]!r}]\n"
            "main()\n")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def _with_metadata(source: Path, target: Path, **changes) -> Path:
    """A copy of a TorchScript file with its embedded metadata changed."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            data = original.read(item.filename)
            if item.filename.endswith(f"/extra/{EXTRA_FILE}"):
                meta = json.loads(data)
                meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in changes.items()})
                data = json.dumps(meta).encode()
            copy.writestr(item, data)
    return target


@pytest.fixture(scope="module")
def evil_library(tmp_path_factory) -> Path:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("needs a C compiler to build the hostile library")
    folder = tmp_path_factory.mktemp("evil")
    (folder / "evil.c").write_text(EVIL_C)
    subprocess.run([shutil.which("cc") or "gcc", "-shared", "-fPIC", "-o", str(folder / "libevil.so"),
                    str(folder / "evil.c")], check=True)
    subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(folder / 'libevil.so')!r})"],
                   cwd=folder, check=True)  # the library does run code when loaded: the plant is real
    assert (folder / MARKER).exists()
    (folder / MARKER).unlink()
    return folder / "libevil.so"


@pytest.mark.parametrize("op_library", ["absolute", "relative", "in-input"])
def test_a_model_file_never_makes_aesipe_load_its_library(seg_torchscript, photo_folder, tmp_path, evil_library,
                                                          op_library):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(evil_library, work / "libevil.so")
    named = {"absolute": str(work / "libevil.so"), "relative": "libevil.so",
             "in-input": str(photo_folder / "libevil.so")}[op_library]
    shutil.copy(evil_library, photo_folder / "libevil.so")
    model = _with_metadata(seg_torchscript, work / "model.pt", custom_ops=["aesipe::pamr"], op_library=named)
    run = _label_subprocess(work, model, photo_folder, work / "out")
    assert not (work / MARKER).exists() and not list(tmp_path.rglob(MARKER)), "the model file ran code"
    assert "Traceback" not in run.stderr
    if run.returncode == 2:  # no aesipe op library built on this machine: said in one line
        assert "no built op library" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    else:  # aesipe's own library was found and loaded instead
        assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("ops", [["evil::run"], ["aesipe::pamr", "torchvision::nms"], ["aesipe::pamr_but_not"]])
def test_a_model_calling_ops_that_are_not_aesipes_is_refused(seg_torchscript, photo_folder, tmp_path, evil_library, ops):
    model = _with_metadata(seg_torchscript, tmp_path / "model.pt", custom_ops=ops, op_library=str(evil_library))
    run = _label_subprocess(tmp_path, model, photo_folder, tmp_path / "out")
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("aesipe-label: error:"), run.stderr
    assert not list(tmp_path.rglob(MARKER)) and not (tmp_path / "out").exists()


def _graph(path: Path, in_channels: int, classes: int, metadata: dict[str, str]) -> Path:
    """A plain ONNX graph (1x1 conv -> scores, argmax -> labels) with the given metadata."""
    weight = numpy_helper.from_array(np.ones((classes, in_channels, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["scores"]),
             helper.make_node("ArgMax", ["scores"], ["index"], axis=1, keepdims=0),
             helper.make_node("Cast", ["index"], ["labels"], to=TensorProto.UINT8)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", in_channels, "h", "w"])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", classes, "h", "w"]),
                               helper.make_tensor_value_info("labels", TensorProto.UINT8, ["n", "h", "w"])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def _metadata_of(onnx_file: Path, **changes) -> dict[str, str]:
    meta = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in changes.items()})
    return meta


@pytest.mark.parametrize("in_channels, graph_classes, named, message", [
    (3, 5, ["background", "cat", "dog"], "names 3 classes"),         # too few names: values 3, 4 unnamed
    (3, 2, ["background", "cat", "dog", "car"], "names 4 classes"),  # too many
    (4, 4, ["background", "cat", "dog", "car"], "does not run as its metadata describes"),  # not RGB
])
def test_metadata_that_does_not_describe_the_graph_is_refused(seg_onnx, photo_folder, tmp_path, in_channels,
                                                              graph_classes, named, message):
    palette = [[i * 40, 0, 0] for i in range(len(named))]
    model = _graph(tmp_path / "model.onnx", in_channels, graph_classes,
                   _metadata_of(seg_onnx, classes=named, palette=palette))
    result = runner.invoke(app, [str(model), str(photo_folder), str(tmp_path / "out")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "out").exists()  # before any image was read, nothing written


def test_a_graph_that_matches_its_metadata_labels(seg_onnx, photo_folder, tmp_path):
    named = ["background", "cat", "dog", "car"]
    model = _graph(tmp_path / "model.onnx", 3, 4, _metadata_of(seg_onnx, classes=named))
    result = runner.invoke(app, [str(model), str(photo_folder), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output


def test_a_fallback_output_the_graph_does_not_give_is_refused(pl_onnx, tmp_path):
    """The metadata names a third output (the zero-map fallback) that the graph lost: one line when the file is
    opened, not a KeyError mid-run; the genuine file opens and says whether it has one."""
    from aesipe.infer import Labeler
    from aesipe.utils.errors import UserError

    assert Labeler(pl_onnx).zero_map_output  # an ONNX pseudo-labeller of this aesipe has it
    model = onnx.load(str(pl_onnx))
    kept = [output for output in model.graph.output if output.name != "fallback"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, str(tmp_path / "lost.onnx"))
    with pytest.raises(UserError, match="names a fallback output the graph does not give") as caught:
        Labeler(tmp_path / "lost.onnx")
    assert "\n" not in str(caught.value)
