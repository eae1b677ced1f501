"""``export_model``: checkpoint or run directory -> a verified, self-describing ONNX or TorchScript file."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

import aesipe
from aesipe.constants import IMAGENET_MEAN, IMAGENET_STD
from aesipe.contract import InputFormat, build_metadata
from aesipe.models.pseudo_maps import PAMR_DOWNSCALE, PAMR_MODES, CamSettings
from aesipe.utils.errors import UserError
from aesipe.utils.labelpng import voc_palette

from .formats import ExportFormat, check_options, get_format
from .sources import LoadedModel, load_source
from .wrappers import PseudoLabellerGraph, SegmenterGraph

SIZE_DIVISOR = 16
"""Segmenter inputs are padded to a multiple of the networks' output stride (16), as in training."""


def _normalise_what(what: str | None) -> str | None:
    return what.replace("-", "_") if what else None


def default_output(source: Path, loaded: LoadedModel, fmt: ExportFormat) -> Path:
    if source.is_dir():
        return source / "export" / f"{loaded.what}{fmt.suffix}"
    return loaded.checkpoint.with_suffix(fmt.suffix)


def cam_settings_of(loaded: LoadedModel, scales=None, flip: bool | None = None, pamr: str | None = None) -> CamSettings:
    """The pseudo-labeller's test-time procedure: the run's (cam.scales, cam.flip, cam.pamr), each overridable."""
    run = CamSettings.from_config(loaded.cfg)
    pamr = pamr.replace("-", "_") if pamr else None
    if pamr is not None and pamr not in PAMR_MODES:
        raise UserError(f"--pamr must be one of {', '.join(m.replace('_', '-') for m in PAMR_MODES)}, got {pamr!r}")
    if scales is not None and (not scales or min(scales) <= 0):
        raise UserError(f"--scales must be positive numbers, got {list(scales)}")
    return CamSettings(tuple(scales) if scales else run.scales, run.flip if flip is None else flip,
                    pamr or run.pamr, run.pamr_iters, run.pamr_dilations, run.pamr_backend)


def build_graph(loaded: LoadedModel, net: torch.nn.Module, test_time: CamSettings | None, half: bool,
                fallback_output: bool = False) -> torch.nn.Module:
    if loaded.what == "segmenter":
        graph = SegmenterGraph(net, IMAGENET_MEAN, IMAGENET_STD, half=half)
    else:
        graph = PseudoLabellerGraph(net, loaded.cfg.cam.map, loaded.cfg.cam.background_scale, test_time,
                                    IMAGENET_MEAN, IMAGENET_STD, half=half, fallback_output=fallback_output)
    graph.eval().requires_grad_(False)  # PAMR refuses gradients; export needs none
    return graph


def _metadata(loaded: LoadedModel, test_time: CamSettings | None, half: bool, opset: int | None = None,
              custom_ops: tuple[str, ...] = (), op_library: str | None = None,
              fallback_output: bool = False, source: dict | None = None) -> dict[str, str]:
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    classes = loaded.class_names
    palette = loaded.palette or voc_palette(max(len(classes), 1)).tolist()
    seg = loaded.what == "segmenter"
    inputs = [{"name": "image", "dtype": "float32", "shape": ["batch", 3, "height", "width"],
               "meaning": "RGB in [0, 1]" + ("; pad H, W to a multiple of size_divisor with pad_value" if seg
                                              else ", unpadded (any size)")}]
    if not seg:
        inputs.append({"name": "tags", "dtype": "float32", "shape": ["batch", len(classes) - 1],
                       "meaning": "multi-hot of the image's classes, order = classes[1:] (background excluded)"})
    output = {
        "kind": "logits" if seg else "scores",
        "names": ["scores", "labels"],
        "layout": "scores: NCHW float32 [batch, classes, height, width]; labels: NHW uint8",
        "resized_to_input": True,
        "labels": "argmax over classes" + ("" if seg else " after background x background_scale"),
    }
    if not seg:
        output["scores"] = ("the maps summed over the test-time scales inside the graph (flip fused in the "
                            "network), classes not in tags zeroed; not yet max-normalised")
        output["labels_rule"] = ("divide scores by their per-channel max + 1e-5, multiply channel 0 by "
                                 "background_scale, argmax (aesipe.pseudo_labels)")
        output["map"] = loaded.cfg.cam.map
        output["test_time"] = test_time.describe()
        if fallback_output:
            output["names"] = [*output["names"], "fallback"]
            output["fallback"] = ("uint8 [batch, classes]: 1 where a tagged class's map was zero everywhere and "
                                  "its pre-ReLU CAM stands in (count those images)")
        if loaded.cfg.cam.crf:
            output["crf"] = {"protocol": "label", **{k: v for k, v in dataclasses.asdict(loaded.cfg.crf).items()
                                                     if k not in ("workers", "protocol")}}
    pamr = None
    if not seg and test_time.pamr != "off":
        pamr = {"mode": test_time.pamr, "num_iter": test_time.pamr_iters, "dilations": list(test_time.pamr_dilations),
                "downscale": PAMR_DOWNSCALE, "image": "the [0, 1] input resized to 1/downscale, bilinear"}
    return build_metadata(
        model_kind=loaded.what, classes=classes, palette=palette,
        input_format=InputFormat(mean=mean, std=std, pad_value=mean, size_divisor=SIZE_DIVISOR if seg else None),
        output=output, inputs=inputs, aesipe_version=aesipe.__version__, torch_version=torch.__version__,
        pamr=pamr, background_scale=1.0 if seg else loaded.cfg.cam.background_scale,
        opset=opset, precision="float16" if half else "float32", custom_ops=custom_ops, op_library=op_library,
        source=source,
    )


def _source_record(loaded: LoadedModel, verified: bool) -> dict:
    """What the file was made from (the checkpoint's SHA-256) and whether it passed the parity check: lets an
    ``--int8`` export reuse the float32 file of the same checkpoint and settings instead of tracing it again."""
    digest = hashlib.sha256()
    with open(loaded.checkpoint, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"checkpoint_sha256": digest.hexdigest(), "verified": verified}


def _same_float32_export(path: Path | None, metadata: dict[str, str]) -> bool:
    """``path`` is a checked float32 ONNX file this export would write again (same metadata, source included)."""
    if path is None or not path.is_file():
        return False
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not an ONNX file we can read: export afresh
        return False
    return {entry.key: entry.value for entry in model.metadata_props} == metadata


def export_loaded(loaded: LoadedModel, out_path: Path, fmt: ExportFormat, half: bool = False,
                  opset: int | None = None, test_time: CamSettings | None = None, verify: bool = True,
                  log: Callable[[str], None] = print, int8: dict | None = None, float32_file: Path | None = None) -> Path:
    """Export ``loaded`` to ``out_path`` atomically; a file failing the parity check is never left behind.

    ``int8``: quantise the checked float32 file (``export/quantize.py``; keys ``calibration``, ``images``,
    ``check_images``, ``min_agreement``); ``float32_file``, when it is the checked float32 export of the same
    checkpoint with the same settings, is quantised instead of tracing the network again."""
    from .verify import sample_inputs, verify_file

    num_classes = len(loaded.class_names) - 1
    if loaded.what == "pseudo_labeller" and test_time is None:
        test_time = cam_settings_of(loaded)
    if int8 is not None:  # before any work: the calibration images must be there
        from . import quantize

        samples_of_run = quantize.run_samples(loaded.cfg, loaded.class_names, int8.get("calibration"),
                                              int8.get("images", quantize.CALIBRATION_IMAGES),
                                              int8.get("check_images", quantize.CHECK_IMAGES))
    # aesipe-label's TorchScript backend reads two outputs (scores, labels): only ONNX files get the third
    with_fallback = fmt.name == "onnx" and loaded.what != "segmenter"
    reference = build_graph(loaded, loaded.net, test_time, half=False, fallback_output=with_fallback)
    graph = (build_graph(loaded, copy.deepcopy(loaded.net), test_time, half=True, fallback_output=with_fallback)
             if half else reference)
    samples = sample_inputs(64, 96, None if loaded.what == "segmenter" else num_classes)
    input_names = ["image"] if loaded.what == "segmenter" else ["image", "tags"]
    partial = out_path.with_name(f".{out_path.stem}.partial-{os.getpid()}{out_path.suffix}")
    what = loaded.what.replace("_", "-")
    detail = (f" ({test_time.describe()['scales']} scales, flip {test_time.flip}, PAMR {test_time.pamr}, background "
              f"x{loaded.cfg.cam.background_scale:g})" if test_time else "")
    source = _source_record(loaded, verify)

    def make_metadata(**kwargs) -> dict[str, str]:
        return _metadata(loaded, test_time, half, fallback_output=with_fallback, source=source, **kwargs)

    reuse = False
    if int8 is not None:  # int8 files are ONNX: the float32 one, if checked and the same, is quantised as it is
        from .onnx import DEFAULT_OPSET

        reuse = _same_float32_export(float32_file, make_metadata(opset=opset or DEFAULT_OPSET))
    made = [folder for folder in [out_path.parent, *out_path.parent.parents] if not folder.exists()]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if reuse:
            log(f"quantising {float32_file}: the checked float32 export of this checkpoint with these settings")
            shutil.copyfile(float32_file, partial)
        else:
            log(f"exporting the {what}{detail} to {fmt.name}: tracing the network (a real one takes a minute or two "
                "on a CPU)")
            started = time.perf_counter()
            with torch.no_grad():
                outputs = ["scores", "labels"] + (["fallback"] if with_fallback else [])
                fmt.write(graph, samples, input_names, outputs, make_metadata, partial, opset)
            log(f"written in {time.perf_counter() - started:.0f} s" + ("; checking it against PyTorch at two sizes"
                                                                       if verify else ""))
            if verify:
                result = verify_file(partial, reference, None if loaded.what == "segmenter" else num_classes,
                                     "float16" if half else "float32")
                log(result.summary())
                if not result.ok:
                    raise UserError(f"the exported file does not match PyTorch ({result.summary()}); nothing written",
                                    exit_code=1)
        if int8 is not None:
            _quantise_into(partial, loaded, samples_of_run, int8, log)
        os.replace(partial, out_path)
        log(f"wrote {out_path}")
        tags = "" if loaded.what == "segmenter" else " --tags TAGS.csv"
        log(f"next: aesipe-label {out_path} IMAGES/ OUT_DIR/{tags}")
    except BaseException:
        for folder in made:  # the folders this export made go too (emptied: the partial file is removed first)
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
                folder.rmdir()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return out_path


def _quantise_into(partial: Path, loaded: LoadedModel, samples: tuple[list, list], settings: dict,
                   log: Callable[[str], None]) -> None:
    """Replace the checked float32 ``partial`` by its int8 version, judged against it first; ``samples``:
    (calibration, held-out check) from ``quantize.run_samples``."""
    import onnx

    from . import quantize

    calibration, held_out = samples
    quantised = partial.with_name(partial.stem + ".int8.onnx")
    try:
        quantize.quantise(partial, quantised, calibration, log)
        result = quantize.check(partial, quantised, held_out, loaded.class_names)
        log(result.summary())
        minimum = settings.get("min_agreement", quantize.MIN_AGREEMENT)
        if result.agreement < minimum:
            raise UserError(f"the int8 file agrees with float32 on {100 * result.agreement:.1f}% of pixels, below "
                            f"{100 * minimum:.0f}%; nothing written (export without --int8)", exit_code=1)
        model = onnx.load(str(quantised))
        meta = {entry.key: entry.value for entry in model.metadata_props}
        meta.update(precision="int8", quantization=result.as_metadata())
        del model.metadata_props[:]
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(partial))
    finally:
        with contextlib.suppress(FileNotFoundError):
            quantised.unlink()


def export_model(source: str | Path, out_path: str | Path | None = None, format: str = "onnx", half: bool = False,
                 opset: int | None = None, what: str | None = None, pamr: str | None = None,
                 scales=None, flip: bool | None = None, verify: bool = True,
                 log: Callable[[str], None] = print, int8: dict | None = None) -> Path:
    """Export a run directory (``seg/final.pt`` or ``stage1/final.pt``) or checkpoint file.

    ``what``: "segmenter" or "pseudo_labeller" (None: the checkpoint's kind; a run directory: segmenter).
    Pseudo-labellers carry the run's test-time procedure (cam.scales, cam.flip, cam.pamr); ``scales``,
    ``flip`` and ``pamr`` (off | per-scale | fused) override it. Returns the written path. Raises
    ``UserError`` (one line) for anything the user can fix.
    """
    fmt = get_format(format)
    used = [name for name, on in (("half", half), ("opset", opset is not None), ("pamr", pamr is not None),
                                  ("scales", scales is not None), ("flip", flip is not None),
                                  ("int8", int8 is not None)) if on]
    if int8 is not None and half:
        raise UserError("--int8 and --half exclude each other: pick one precision")
    if int8 is not None and not verify:
        raise UserError("--int8 needs the parity check of the float32 file first: drop --no-verify")
    check_options(fmt, used)
    fmt.require()
    source = Path(source)
    loaded = load_source(source, _normalise_what(what))
    test_time = None
    if loaded.what == "segmenter":
        pl_only = [f"--{name}" for name in ("pamr", "scales", "flip") if name in used]
        if pl_only:
            raise UserError(f"{', '.join(pl_only)} apply to pseudo-labellers (--what pseudo-labeller), not segmenters")
    else:
        test_time = cam_settings_of(loaded, scales, flip, pamr)
    out = Path(out_path) if out_path else default_output(source, loaded, fmt)
    if out.suffix.lower() not in (fmt.suffix, ".torchscript"):
        out = out.with_name(out.name + fmt.suffix)
    float32_file = None
    if int8 is not None:  # the float32 export of the same source, where `aesipe-export SOURCE` writes it
        float32_file = default_output(source, loaded, fmt)
        if out_path is None:
            out = out.with_name(out.stem + "_int8" + out.suffix)
    return export_loaded(loaded, out, fmt, half=half, opset=opset, test_time=test_time, verify=verify, log=log,
                         int8=int8, float32_file=float32_file)
