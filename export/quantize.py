"""int8 exports: ONNX Runtime's static quantisation (QDQ format) on calibration images from the run.

The float32 file is exported and checked against PyTorch first; it is then quantised with
``onnxruntime.quantization.quantize_static`` (per-channel int8 weights with 7-bit range, uint8 activations,
MinMax ranges from calibration images prepared exactly as ``aesipe-label`` prepares them) and the int8 file is judged
against the float32 one through ``aesipe.infer.Labeler`` on held-out images: the share of pixels whose
label agrees, and, where the images have masks, the mIoU of both. Below ``min_agreement`` the export
fails and writes nothing. int8 pays where ONNX Runtime has int8 kernels for the hot ops (convolutions on
x86 CPUs). uint8 activations with int8 weights is the pairing its x86 kernels run fast on CPUs without VNNI
(AVX2's ``vpmaddubsw`` multiplies u8 by s8; 7-bit weights keep its 16-bit sums from saturating): int8
activations gave no speed-up over float32 on a 2-core AVX2 EPYC, this pairing 1.48x (benchmarks/RESULTS.md).
The metadata says ``precision: int8`` and carries the measured agreement.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from aesipe.utils.errors import UserError

MIN_AGREEMENT = 0.95
CALIBRATION_IMAGES = 32
CHECK_IMAGES = 64


@dataclass(frozen=True)
class Sample:
    path: Path
    tags: np.ndarray | None
    mask: np.ndarray | None


@dataclass(frozen=True)
class QuantisationCheck:
    images: int
    agreement: float
    miou_float32: float | None
    miou_int8: float | None

    def summary(self) -> str:
        text = f"int8 vs float32 on {self.images} held-out images: label agreement {100 * self.agreement:.2f}%"
        if self.miou_float32 is not None:
            text += (f", mIoU {100 * self.miou_float32:.1f} -> {100 * self.miou_int8:.1f} "
                     f"({100 * (self.miou_int8 - self.miou_float32):+.1f})")
        return text

    def as_metadata(self) -> str:
        return json.dumps({"check_images": self.images, "label_agreement": round(self.agreement, 5),
                           "miou_float32": self.miou_float32, "miou_int8": self.miou_int8})


def require_quantization():
    try:
        from onnxruntime import quantization
    except ImportError:
        raise UserError("--int8 needs onnxruntime (with its quantization tools): pip install 'aesipe[cpu]'") from None
    return quantization


def run_samples(cfg, class_names: Sequence[str], calibration: Path | None, count: int, check: int) -> tuple[list[Sample], list[Sample]]:
    """(calibration samples, held-out check samples): from a folder of images, or from the run's dataset
    (calibration from the training split, the check from the evaluation split, masks when it has them)."""
    from aesipe.data import open_dataset

    if calibration is not None:
        from aesipe.infer.inputs import resolve_inputs

        images = [Path(image.path) for image in resolve_inputs(calibration)]
        if len(images) < 2:
            raise UserError(f"--calibration {calibration} holds {len(images)} image(s): give at least 2")
        half = max(1, len(images) // 2)
        return ([Sample(p, None, None) for p in images[:half][:count]],
                [Sample(p, None, None) for p in images[half:][:check]])
    try:
        train = open_dataset(cfg.data, cfg.data.train_split)
        held_out = open_dataset(cfg.data, cfg.data.eval_split)
    except UserError as exc:
        raise UserError(f"--int8 calibrates on the run's images, which do not open here ({exc}): pass "
                        "--calibration IMAGES (a folder of typical images)") from None
    if list(train.class_names) != list(class_names):
        raise UserError("the run's dataset has other classes than the model: pass --calibration IMAGES")
    pick = np.linspace(0, len(train) - 1, min(count, len(train))).round().astype(int)
    calib = [Sample(train.image_path(train.ids[i]), train.labels(train.ids[i]), None) for i in dict.fromkeys(pick)]
    ids = held_out.ids[:check]
    return calib, [Sample(held_out.image_path(i), held_out.labels(i), held_out.load_mask(i)) for i in ids]


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over prepared samples (one image per call)."""

    def __init__(self, labeler, samples: list[Sample]):
        self.labeler, self.samples = labeler, samples
        self._feeds: Iterator[dict] | None = None

    def _iterate(self) -> Iterator[dict]:
        from aesipe.imaging import read_image

        for sample in self.samples:
            item = self.labeler.prepare(read_image(sample.path, self.labeler.settings.read_side), self._tags(sample))
            feeds = {"image": item.variants[0][2][None]}
            if self.labeler.info.needs_tags:
                feeds["tags"] = item.tags[None].astype(np.float32)
            yield feeds

    def _tags(self, sample: Sample) -> np.ndarray | None:
        if not self.labeler.info.needs_tags:
            return None
        return sample.tags if sample.tags is not None else np.ones(self.labeler.info.num_classes, np.float32)

    def get_next(self) -> dict | None:
        if self._feeds is None:
            self._feeds = self._iterate()
        return next(self._feeds, None)

    def rewind(self) -> None:
        self._feeds = None


def prepare_for_quantisation(quantization, source: Path, target: Path, log: Callable[[str], None]) -> None:
    """ONNX Runtime's pre-processing (shape inference + graph optimisation) of ``source`` into ``target``.

    Its symbolic shape inference gives up on some graphs with dynamic sizes (a real DeepLabV3-MobileNetV2:
    "Incomplete symbolic shape inference", a bare ``Exception``); ONNX's own shape inference is then used.
    It writes its temporary files (``sym_shape_infer_temp.onnx`` and a 20 MB ``<uuid>.data`` for that model)
    into the current directory and leaves them when it fails, so it runs inside ``target``'s folder."""
    source, target = Path(source).resolve(), Path(target).resolve()
    with contextlib.chdir(target.parent):
        try:
            quantization.shape_inference.quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
        except Exception as exc:  # noqa: BLE001 - ORT raises a plain Exception here
            log(f"symbolic shape inference failed ({str(exc).splitlines()[0][:80]}); using ONNX shape inference")
            quantization.shape_inference.quant_pre_process(str(source), str(target), skip_symbolic_shape=True)


def quantise(float32_file: Path, out_file: Path, calibration: list[Sample], log: Callable[[str], None]) -> None:
    """Write the int8 (QDQ) version of ``float32_file`` to ``out_file``."""
    quantization = require_quantization()
    from aesipe.infer import Labeler

    labeler = Labeler(float32_file, device="cpu")
    log(f"quantising to int8: calibrating on {len(calibration)} images")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare_for_quantisation(quantization, float32_file, prepared, log)
        quantization.quantize_static(
            str(prepared), str(out_file), _Reader(labeler, calibration), quant_format=quantization.QuantFormat.QDQ,
            per_channel=True, activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
            reduce_range=True, calibrate_method=quantization.CalibrationMethod.MinMax,
        )


def check(float32_file: Path, int8_file: Path, samples: list[Sample], class_names: Sequence[str]) -> QuantisationCheck:
    """Label agreement of the int8 file with the float32 one, and both mIoUs where masks exist."""
    from aesipe.infer import Labeler

    reference, quantised = Labeler(float32_file, device="cpu"), Labeler(int8_file, device="cpu")
    same = total = 0
    counts = {name: np.zeros((len(class_names),) * 2, np.int64) for name in ("float32", "int8")}
    for sample in samples:
        tags = None
        if reference.info.needs_tags:
            tags = sample.tags if sample.tags is not None else np.ones(reference.info.num_classes, np.float32)
        a, b = reference.label(sample.path, tags=tags), quantised.label(sample.path, tags=tags)
        same += int((a == b).sum())
        total += a.size
        if sample.mask is not None:
            for name, pred in (("float32", a), ("int8", b)):
                keep = sample.mask != 255
                index = sample.mask[keep].astype(np.int64) * len(class_names) + pred[keep].astype(np.int64)
                counts[name] += np.bincount(index, minlength=len(class_names) ** 2).reshape(counts[name].shape)
    mious = {name: _miou(matrix) if matrix.sum() else None for name, matrix in counts.items()}
    return QuantisationCheck(len(samples), same / max(total, 1), mious["float32"], mious["int8"])


def _miou(matrix: np.ndarray) -> float:
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean())
