"""The whole method over one run directory, with a manifest: skip what is done, redo what changed.

Stages run in order (``STAGES``); ``<run>/manifest.json`` records for each one the hash of the config
sections it depends on (its own and its ancestors'), the keys of its input stages, its outputs, status,
timestamps and (for the evaluations) the mIoU. A stage is skipped when its record is ``done`` with the
same key and its outputs exist. A changed config changes the key of every stage that depends on it
(keys chain through the inputs), so those stages and everything downstream are redone: their old
outputs are removed first, so no stage resumes from files made with other settings. A killed run keeps
its ``running`` record and key; the re-run calls the stage again, and the stage resumes by itself
(training from ``checkpoints/last.pt``, per-image stages from the files already written).
Outputs of a stage run by hand (no record yet) are adopted, not removed.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aesipe.config import SCHEMA_VERSION, RunConfig, config_hash, to_dict
from aesipe.utils.atomic import atomic_write_text
from aesipe.utils.errors import UserError

from .pipeline_legacy import adopt_legacy_records
from .runconfig import save_run_config

MANIFEST = "manifest.json"
# Fields that change how fast or where a stage runs, never what it makes.
_RUNTIME_FIELDS = {"workers", "device", "log_every", "checkpoint_every"}


def _sections(cfg: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The named config parts (``section`` or ``section.field``) without runtime-only fields."""
    out: dict[str, Any] = {}
    for name in names:
        section, _, field = name.partition(".")
        value = getattr(cfg, section)
        value = value if isinstance(value, dict) else to_dict(value)
        if field:
            out[name] = value[field]
        else:
            out[name] = {k: v for k, v in value.items() if k not in _RUNTIME_FIELDS}
    return out


def _splits(cfg: RunConfig, *names: str) -> list[str]:
    from .stages.random_walk import seg_train_split

    lookup = {"train": cfg.data.train_split, "cam": cfg.data.cam_split, "seg": seg_train_split(cfg)}
    return list(dict.fromkeys(lookup[n] for n in names))


# ---------------------------------------------------------------- what each stage runs
def _run_train(cfg: RunConfig) -> dict:
    from .stages.stage1 import train_stage1

    train_stage1(cfg)
    return {}


def _run_make_cam(cfg: RunConfig) -> dict:
    from aesipe.data import resolve_split

    from .stages.make_cam import make_cams

    # One pass per set of images: a folder dataset's train_aug is its train (the CAM folder is shared).
    by_images = {resolve_split(cfg.data, split): split for split in _splits(cfg, "train", "seg", "cam")}
    for split in by_images.values():
        make_cams(cfg, split)
    return {}


def _run_eval_cam(cfg: RunConfig) -> dict:
    from .stages.evaluate import describe, evaluate_cams, save_cam_eval

    result = evaluate_cams(cfg, cfg.data.cam_split, "maps", [cfg.cam.background_scale, *cfg.cam.sweep],
                           crf_protocol="label" if cfg.cam.crf else None)  # the labels as the run makes them
    print(describe(result))
    save_cam_eval(cfg, result)
    return {"miou": result["miou"], "split": cfg.data.cam_split}


def _run_ir_label(cfg: RunConfig) -> dict:
    from .stages.ir_label import make_ir_labels

    make_ir_labels(cfg, cfg.data.train_split)
    return {}


def _run_irn(cfg: RunConfig) -> dict:
    from .stages.irn import train_irn

    train_irn(cfg)
    return {}


def _run_make_seg_labels(cfg: RunConfig) -> dict:
    from .stages.random_walk import make_seg_labels

    for split in _splits(cfg, "seg", "cam"):
        make_seg_labels(cfg, split)
    return {}


def _run_eval_seg_labels(cfg: RunConfig) -> dict:
    from .stages.random_walk import seg_label_dir
    from .stages.seg_eval import LABEL_EVAL_FILE, describe, evaluate_label_dir, save_eval

    result = evaluate_label_dir(cfg, seg_label_dir(cfg, cfg.data.cam_split), cfg.data.cam_split)
    print(describe(result, "random-walk pseudo-labels"))
    save_eval(cfg, result, LABEL_EVAL_FILE)
    return {"miou": result["miou"], "split": cfg.data.cam_split}


def _run_seg(cfg: RunConfig) -> dict:
    from .stages.seg import train_seg

    train_seg(cfg)
    return {}


def _run_eval_seg(cfg: RunConfig) -> dict:
    from .stages.seg_eval import describe, evaluate_segmenter, save_eval

    result = evaluate_segmenter(cfg)
    print(describe(result, "DeepLabV3"))
    save_eval(cfg, result)
    metrics = {"miou": result["miou"], "split": cfg.data.eval_split}
    if cfg.data.cam_split != cfg.data.eval_split:  # like for like with its training labels (summary_lines)
        try:
            metrics["miou_on_labels_split"] = evaluate_segmenter(cfg, cfg.data.cam_split)["miou"]
            metrics["labels_split"] = cfg.data.cam_split
        except UserError:  # that split has no masks
            pass
    return metrics


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]
    """Config parts this stage reads itself (its ancestors' are added through ``inputs``)."""
    inputs: tuple[str, ...]
    run: Callable[[RunConfig], dict]
    outputs: Callable[[RunConfig], list[str]]
    """Paths relative to the run directory that the stage makes (removed when it is redone)."""
    title: str = ""


_SEG_TRAIN_FIELDS = tuple(
    f"seg.{f.name}" for f in dataclasses.fields(RunConfig().seg)
    if not f.name.startswith("test_") and f.name not in _RUNTIME_FIELDS
)  # fmt: skip

# Stage 1 reads these data fields; the splits judged later join the stages that use them.
_DATA_FIELDS = ("data.root", "data.kind", "data.train_split", "data.labels_csv")

STAGES: tuple[Stage, ...] = (
    Stage("train", _DATA_FIELDS + ("model", "train", "runtime.amp"), (), _run_train, lambda c: ["stage1"], "stage 1 (AE-SIPE)"),
    Stage("make-cam", ("data.cam_split", "seg.train_split", "cam.scales", "cam.flip", "cam.pamr", "cam.zero_map_fallback"),
          ("train",), _run_make_cam,
          lambda c: [f"cams/{s}" for s in _splits(c, "train", "seg", "cam")], "CAMs"),
    Stage("eval-cam", ("cam.map", "cam.background_scale", "cam.crf", "cam.sweep", "crf"), ("make-cam",), _run_eval_cam,
          lambda c: ["cam_eval.json"], "stage-1 pseudo-labels"),
    Stage("ir-label", ("cam.map", "crf", "ir_label"), ("make-cam",), _run_ir_label,
          lambda c: [f"ir_labels/{c.data.train_split}"], "IR labels"),
    Stage("irn", ("irn", "runtime.amp"), ("ir-label",), _run_irn, lambda c: ["irn"], "IRN"),
    Stage("make-seg-labels", ("random_walk", "cam.map", "cam.background_scale"), ("irn", "make-cam"), _run_make_seg_labels,
          lambda c: [f"seg_labels/{s}" for s in _splits(c, "seg", "cam")], "random-walk labels"),
    Stage("eval-seg-labels", (), ("make-seg-labels",), _run_eval_seg_labels,
          lambda c: ["seg_labels_eval.json"], "random-walk pseudo-labels"),
    Stage("seg", _SEG_TRAIN_FIELDS + ("runtime.amp",), ("make-seg-labels",), _run_seg, lambda c: ["seg"], "DeepLabV3"),
    Stage("eval-seg", ("data.eval_split", "seg.test_scales", "seg.test_flip", "seg.test_crf", "crf"), ("seg",), _run_eval_seg,
          lambda c: ["seg_eval.json"], "DeepLabV3"),
)  # fmt: skip
STAGE_NAMES = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


def _ancestors(name: str) -> list[str]:
    seen: list[str] = []
    for parent in _BY_NAME[name].inputs:
        for item in [*_ancestors(parent), parent]:
            if item not in seen:
                seen.append(item)
    return seen


def stage_hashes(cfg: Any, sections: dict[str, tuple[str, ...]] | None = None) -> dict[str, dict[str, Any]]:
    """Per stage: ``config_hash`` (own + ancestors' sections), ``inputs`` {stage: key}, ``key``.

    ``sections`` replaces some stages' own section lists (aesipe 0.1's, see ``pipeline_legacy``)."""
    own = {stage.name: stage.sections for stage in STAGES} | (sections or {})
    out: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        names = [n for a in [*_ancestors(stage.name), stage.name] for n in own[a]]
        seg = cfg.seg if isinstance(cfg.seg, dict) else to_dict(cfg.seg)
        if stage.name == "eval-seg" and not seg["test_crf"]:
            names.remove("crf")  # the CRF settings matter only when the CRF runs
        chash = config_hash(_sections(cfg, tuple(dict.fromkeys(names))))
        inputs = {p: out[p]["key"] for p in stage.inputs}
        out[stage.name] = {"config_hash": chash, "inputs": inputs, "key": config_hash({"c": chash, "i": inputs})}
    return out


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return {"format": "aesipe-manifest", "version": 1, "stages": {}}
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not valid JSON: remove it to start the pipeline bookkeeping afresh") from None
    manifest.setdefault("stages", {})
    return manifest


def _write_manifest(run_dir: Path, manifest: dict) -> None:
    atomic_write_text(Path(run_dir) / MANIFEST, json.dumps(manifest, indent=1, sort_keys=False) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _remove_outputs(run_dir: Path, outputs: list[str]) -> None:
    for relative in outputs:
        path = run_dir / relative
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _check_stage(name: str | None, option: str) -> None:
    if name is not None and name not in _BY_NAME:
        raise UserError(f"{option} must name a stage: {', '.join(STAGE_NAMES)} (got {name!r})")


def run_pipeline(
    cfg: RunConfig, start: str | None = None, until: str | None = None, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the stages (from ``start``, redone even when up to date, until ``until``); returns the manifest."""
    _check_stage(start, "--from")
    _check_stage(until, "--until")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(cfg)
    hashes = stage_hashes(cfg)
    manifest = read_manifest(run_dir)
    records = manifest["stages"]
    adopted = adopt_legacy_records(records, cfg, hashes)
    if adopted:
        echo(f"[manifest] {adopted} stage record(s) of aesipe 0.1 adopted: same settings, nothing redone")
        _write_manifest(run_dir, manifest)
    forced = set(STAGE_NAMES[STAGE_NAMES.index(start):]) if start else set()
    last = STAGE_NAMES.index(until) if until else len(STAGES) - 1
    for stage in STAGES[: last + 1]:
        record = records.get(stage.name)
        key = hashes[stage.name]["key"]
        outputs = stage.outputs(cfg)
        up_to_date = record is not None and record.get("key") == key
        if up_to_date and record.get("status") == "done" and stage.name not in forced \
                and all((run_dir / o).exists() for o in outputs):  # fmt: skip
            echo(f"[{stage.name}] up to date, skipped")
            continue
        if record is not None and (not up_to_date or stage.name in forced):
            _remove_outputs(run_dir, list(dict.fromkeys([*record.get("outputs", []), *outputs])))
            echo(f"[{stage.name}] {'redone' if stage.name in forced else 'config changed'}: old outputs removed")
        elif record is not None and record.get("status") == "running":
            echo(f"[{stage.name}] resuming an interrupted run")
        echo(f"[{stage.name}] running")
        records[stage.name] = {**hashes[stage.name], "schema": SCHEMA_VERSION, "status": "running", "outputs": outputs,
                               "started": _now()}
        _write_manifest(run_dir, manifest)
        metrics = stage.run(cfg)
        records[stage.name].update(status="done", finished=_now(), **({"metrics": metrics} if metrics else {}))
        _write_manifest(run_dir, manifest)
    return manifest


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """The mIoU the evaluation stages recorded, in pipeline order, and a warning for each stage whose output
    is worse than its input on the same images."""
    lines = []
    for stage in STAGES:
        metrics = manifest["stages"].get(stage.name, {}).get("metrics")
        if metrics and metrics.get("miou") is not None:
            lines.append(f"{stage.title:<28} mIoU {100 * metrics['miou']:5.1f}%  ({metrics['split']})")
    return lines + regression_lines(manifest)


def regression_lines(manifest: dict[str, Any]) -> list[str]:
    """"worse than its input" lines: IRN's random-walk labels against the stage-1 labels they were made from,
    and the segmenter against the random-walk labels it learned from (both judged on the same split)."""
    def metric(name: str, key: str = "miou", split_key: str = "split") -> tuple[float, str] | None:
        metrics = manifest["stages"].get(name, {}).get("metrics") or {}
        return (metrics[key], metrics[split_key]) if metrics.get(key) is not None else None

    pairs = (("random-walk pseudo-labels (IRN)", metric("eval-seg-labels"), "stage-1 pseudo-labels they were made from",
              metric("eval-cam")),
             ("DeepLabV3", metric("eval-seg", "miou_on_labels_split", "labels_split"),
              "random-walk pseudo-labels it was trained on", metric("eval-seg-labels")))
    lines = []
    for what, output, source, given in pairs:
        if output and given and output[1] == given[1] and output[0] < given[0]:
            lines.append(f"! {what} {100 * output[0]:.1f}% on {output[1]} are "
                         f"{100 * (given[0] - output[0]):.1f} points below the {source} ({100 * given[0]:.1f}%): "
                         "this stage made the pseudo-labels worse")
    return lines
