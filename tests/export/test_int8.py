"""int8 exports: quantised with ONNX Runtime (QDQ), judged against float32, refused below the bar."""
from __future__ import annotations

import json
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from aesipe.export.api import export_model
from aesipe.export.cli import app
from aesipe.utils.errors import UserError

tiny = sys.modules["aesipe_tests_tiny_models"]  # loaded by conftest.py
pytest.importorskip("onnxruntime.quantization")


@pytest.fixture
def calibration(tmp_path):
    folder = tmp_path / "calibration"
    folder.mkdir()
    for index in range(8):
        Image.fromarray(tiny.smooth_rgb(48, 64, seed=index)).save(folder / f"{index}.png")
    return folder


def test_int8_export_is_quantised_and_judged(tmp_path, calibration):
    import onnx

    from aesipe.infer import Labeler

    run = tiny.make_run(tmp_path / "run")
    logs: list[str] = []
    path = export_model(run, tmp_path / "seg.onnx", what="segmenter", int8={"calibration": calibration, "images": 4},
                        log=logs.append)
    graph = onnx.load(str(path)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    # Activations uint8, weights int8: the pairing ONNX Runtime's x86 kernels run fast without VNNI.
    zero_points = {init.name: init.data_type for init in graph.initializer}
    activation_types = {zero_points[node.input[2]] for node in graph.node if node.op_type == "QuantizeLinear"}
    weight_types = {init.data_type for init in graph.initializer if init.data_type == onnx.TensorProto.INT8}
    assert activation_types == {onnx.TensorProto.UINT8} and weight_types == {onnx.TensorProto.INT8}
    labeler = Labeler(path)
    record = json.loads(labeler.info.raw["quantization"])
    assert labeler.info.precision == "int8" and record["check_images"] == 4 and record["label_agreement"] >= 0.95
    assert any("int8 vs float32 on 4 held-out images" in line for line in logs)
    with pytest.raises(UserError, match="this file computes in int8"):  # --half on it names what it is
        Labeler(path, half=True)
    assert labeler.label(tiny.smooth_rgb(40, 56)).shape == (40, 56)


def test_an_int8_file_below_the_bar_is_not_written(tmp_path, calibration):
    run = tiny.make_run(tmp_path / "run")
    with pytest.raises(UserError, match="nothing written") as info:
        export_model(run, tmp_path / "seg.onnx", what="segmenter", log=lambda line: None,
                     int8={"calibration": calibration, "images": 4, "min_agreement": 1.01})
    assert info.value.exit_code == 1 and not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*"))


def test_int8_option_mistakes_are_one_line(tmp_path, calibration):
    run = tiny.make_run(tmp_path / "run")
    runner = CliRunner()
    for args, message in [(["--calibration", str(calibration)], "--calibration applies to --int8"),
                          (["--int8", "--half"], "exclude each other"),
                          (["--int8", "--format", "torchscript"], "--int8 does not apply to torchscript")]:
        result = runner.invoke(app, [str(run), *args])
        assert result.exit_code == 2 and message in result.output, result.output


def test_quantisation_asks_only_for_onnx_shape_inference(tmp_path, calibration, monkeypatch):
    """ONNX Runtime's symbolic shape inference gives up on a real DeepLabV3-MobileNetV2 ("Incomplete symbolic
    shape inference"): it is not tried, so a normal export prints nothing about it, and nothing is left in the
    user's folder."""
    import onnx
    from onnxruntime.quantization import shape_inference

    original, calls = shape_inference.quant_pre_process, []

    def recorded(source, target, skip_symbolic_shape=False, **kwargs):
        calls.append(skip_symbolic_shape)
        return original(source, target, skip_symbolic_shape=skip_symbolic_shape, **kwargs)

    monkeypatch.setattr(shape_inference, "quant_pre_process", recorded)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # the user's folder: nothing may be left in it
    logs: list[str] = []
    path = export_model(tiny.make_run(tmp_path / "run"), tmp_path / "seg.onnx", what="segmenter",
                        int8={"calibration": calibration, "images": 4}, log=logs.append)
    assert calls == [True] and not any("shape inference" in line for line in logs), logs
    assert not list((tmp_path / "cwd").iterdir())
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in onnx.load(str(path)).graph.node}


def test_int8_quantises_the_float32_export_of_the_same_checkpoint_without_tracing_again(tmp_path, calibration):
    run = tiny.make_run(tmp_path / "run")
    float32 = export_model(run, what="segmenter", log=lambda line: None)
    assert float32 == run / "export" / "segmenter.onnx"
    logs: list[str] = []
    int8 = export_model(run, what="segmenter", int8={"calibration": calibration, "images": 4}, log=logs.append)
    assert int8 == run / "export" / "segmenter_int8.onnx"
    assert not any("tracing" in line for line in logs) and any(f"quantising {float32}" in line for line in logs), logs
    # Another checkpoint (retrained), or a float32 file exported without its parity check: traced again.
    for change in ("retrained", "unchecked"):
        if change == "retrained":
            import torch

            checkpoint = torch.load(run / "seg" / "final.pt", weights_only=False)
            torch.save({**checkpoint, "step": checkpoint.get("step", 0) + 1}, run / "seg" / "final.pt")
        else:
            export_model(run, what="segmenter", verify=False, log=lambda line: None)
        logs.clear()
        export_model(run, what="segmenter", int8={"calibration": calibration, "images": 4}, log=logs.append)
        assert any("tracing" in line for line in logs), (change, logs)


def test_a_usage_error_of_int8_is_found_before_any_work_and_leaves_no_folder(tmp_path, calibration):
    run = tiny.make_run(tmp_path / "run")
    result = CliRunner().invoke(app, [str(run), "--int8", "--calibration", str(tmp_path / "no-such-folder")])
    assert result.exit_code == 2 and "tracing" not in result.output, result.output
    assert not (run / "export").exists()
    out = tmp_path / "new" / "deeper" / "seg.onnx"  # a failed check removes the folders the export made
    with pytest.raises(UserError, match="nothing written"):
        export_model(run, out, what="segmenter", verify=True, log=lambda line: None,
                     int8={"calibration": calibration, "images": 2, "min_agreement": 1.01})
    assert not (tmp_path / "new").exists()


def test_the_mIoU_change_is_the_change_of_the_shown_values():
    from aesipe.export.quantize import QuantisationCheck

    text = QuantisationCheck(8, 0.99, 0.4504, 0.4506).summary()  # 45.04 -> 45.06: shown as 45.0 -> 45.1
    assert text.endswith("mIoU 45.0 -> 45.1 (+0.1)"), text
