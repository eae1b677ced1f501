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

Inputs that no stage makes (``SOURCES``: a run's reviewed masks, ``<run>/corrections/``) join the ``inputs``
of the stages that read them by their digest while they are present, so importing corrections redoes those
stages and what depends on them, and nothing else (a run without corrections keeps its keys).
"""
from __future__ import annotations

import importlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from aesipe.config import RUNTIME_ONLY_FIELDS, SCHEMA_VERSION, RunConfig, config_hash, to_dict
from aesipe.utils.atomic import atomic_write_text
from aesipe.utils.errors import UserError

from .pipeline_legacy import adopt_legacy_records
from .runconfig import save_run_config
from .stages import Reads

MANIFEST = "manifest.json"


def _value(cfg: Any, dotted: str) -> Any:
    """``section.field`` of a config or of a view of plain dicts (aesipe 0.1's, ``pipeline_legacy``)."""
    section, _, name = dotted.partition(".")
    value = getattr(cfg, section)
    return value[name] if isinstance(value, dict) else getattr(value, name)


def _sections(cfg: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The named config parts (``section`` or ``section.field``) without runtime-only fields."""
    out: dict[str, Any] = {}
    for name in names:
        section, _, field = name.partition(".")
        if field:
            if field not in RUNTIME_ONLY_FIELDS:
                out[name] = _value(cfg, name)
            continue
        value = getattr(cfg, section)
        value = value if isinstance(value, dict) else to_dict(value)
        out[name] = {k: v for k, v in value.items() if k not in RUNTIME_ONLY_FIELDS}
    return out


def _corrections_digest(cfg: Any) -> str | None:
    """The run's reviewed masks (``aesipe-train corrections``); None when it has none (or ``cfg`` is a view of
    aesipe 0.1's sections, which had none)."""
    from aesipe.corrections import CorrectionStore

    run_dir = getattr(cfg, "run_dir", None)
    return CorrectionStore.of_run(run_dir).digest() if run_dir is not None else None


SOURCES: dict[str, Callable[[Any], str | None]] = {"corrections": _corrections_digest}
"""Inputs of a run that no stage makes, by name: their digest, None while absent. A stage lists those it reads
in ``Stage.sources``; ``@reads(when={part: source})`` declares config parts read only while a source is present."""


def source_digests(cfg: Any) -> dict[str, str | None]:
    return {name: digest(cfg) for name, digest in SOURCES.items()}


def _flag(cfg: Any, flag: str, sources: Mapping[str, str | None] | None = None) -> bool:
    """A ``@reads(when=...)`` condition: a boolean config field, or the presence of a source."""
    if flag in SOURCES:
        return (sources[flag] if sources is not None else SOURCES[flag](cfg)) is not None
    return bool(_value(cfg, flag))


@dataclass(frozen=True)
class Stage:
    name: str
    entry: str
    """``module:function`` in ``train/stages``: the stage's run, which carries its ``@reads`` declaration."""
    inputs: tuple[str, ...]
    outputs: Callable[[RunConfig], list[str]]
    """Paths relative to the run directory that the stage makes (removed when it is redone)."""
    title: str = ""
    sources: Mapping[str, str | None] = field(default_factory=dict)
    """The ``SOURCES`` the stage reads, each with the boolean config field that must be true for it to read
    the source (None: always); a present source's digest is one of the stage's inputs."""

    @property
    def run(self) -> Callable[[RunConfig], dict]:
        module, _, function = self.entry.partition(":")
        return getattr(importlib.import_module(f"{__package__}.stages.{module}"), function)

    def reads(self, cfg: Any, sources: Mapping[str, str | None] | None = None) -> tuple[str, ...]:
        """The config parts this stage reads itself (its ancestors' are added through ``inputs``)."""
        declared: Reads = self.run.reads
        return declared.always + tuple(part for part, flag in declared.when.items() if _flag(cfg, flag, sources))

    def source_inputs(self, cfg: Any, sources: Mapping[str, str | None]) -> dict[str, str]:
        """{source: digest} of the sources this stage reads now (present, and its condition true)."""
        return {name: sources[name] for name, flag in self.sources.items()
                if sources[name] is not None and (flag is None or _flag(cfg, flag, sources))}


def _splits(cfg: RunConfig, *names: str) -> list[str]:
    from .stages import pipeline_splits

    return pipeline_splits(cfg, *names)


STAGES: tuple[Stage, ...] = (
    Stage("train", "stage1:run_train", (), lambda c: ["stage1"], "stage 1 (AE-SIPE)"),
    Stage("make-cam", "make_cam:run_make_cam", ("train",), lambda c: [f"cams/{s}" for s in _splits(c, "train", "seg", "cam")],
          "CAMs"),
    Stage("eval-cam", "evaluate:run_eval_cam", ("make-cam",), lambda c: ["cam_eval.json"], "stage-1 pseudo-labels"),
    Stage("ir-label", "ir_label:run_ir_label", ("make-cam",), lambda c: [f"ir_labels/{c.data.train_split}"], "IR labels",
          sources={"corrections": "corrections.ir_labels"}),
    Stage("irn", "irn:run_irn", ("ir-label",), lambda c: ["irn"], "IRN"),
    Stage("make-seg-labels", "random_walk:run_make_seg_labels", ("irn", "make-cam"),
          lambda c: [f"seg_labels/{s}" for s in _splits(c, "seg", "cam")], "random-walk labels"),
    Stage("eval-seg-labels", "seg_eval:run_eval_seg_labels", ("make-seg-labels",), lambda c: ["seg_labels_eval.json"],
          "random-walk pseudo-labels"),
    Stage("seg", "seg:run_seg", ("make-seg-labels",), lambda c: ["seg"], "DeepLabV3", sources={"corrections": None}),
    Stage("eval-seg", "seg_eval:run_eval_seg", ("seg",), lambda c: ["seg_eval.json"], "DeepLabV3"),
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


def hashed_reads(name: str, own: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The config parts a stage's key hashes: what it and its ancestors declare they read (``own``: per stage)."""
    return tuple(dict.fromkeys(part for stage in [*_ancestors(name), name] for part in own[stage]))


def stage_hashes(cfg: Any, sections: dict[str, tuple[str, ...]] | None = None) -> dict[str, dict[str, Any]]:
    """Per stage: ``config_hash`` (the parts it and its ancestors read), ``inputs`` {stage: key}, ``key``.

    ``sections`` replaces some stages' own declarations (aesipe 0.1's, see ``pipeline_legacy``)."""
    sources = source_digests(cfg)
    sections = sections or {}
    own = {stage.name: sections[stage.name] if stage.name in sections else stage.reads(cfg, sources) for stage in STAGES}
    out: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        chash = config_hash(_sections(cfg, hashed_reads(stage.name, own)))
        inputs = {p: out[p]["key"] for p in stage.inputs} | stage.source_inputs(cfg, sources)
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


def _why_redone(record: dict, now: dict) -> str:
    """What made a finished stage's key change: a source it reads (``corrections changed``; the config parts read
    only while it is present change with it), else its config or an ancestor's (``config changed``)."""
    old_inputs, new_inputs = record.get("inputs", {}), now["inputs"]
    changed = [name for name in SOURCES if old_inputs.get(name) != new_inputs.get(name)]
    return " and ".join(changed) + " changed" if changed else "config changed"


def _check_stage(name: str | None, option: str) -> None:
    if name is not None and name not in _BY_NAME:
        raise UserError(f"{option} must name a stage: {', '.join(STAGE_NAMES)} (got {name!r})")


def _check_data(cfg: RunConfig) -> None:
    """Open every split the stages read, before any of them runs: a wrong data.root, a missing split file or a
    bad tag CSV is one line before any work, not an error in the middle of the pipeline."""
    from aesipe.data import open_dataset

    for split in dict.fromkeys([*_splits(cfg, "train", "seg", "cam"), cfg.data.eval_split]):
        open_dataset(cfg.data, split)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_pipeline(
    cfg: RunConfig, start: str | None = None, until: str | None = None, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the stages (from ``start``, redone even when up to date, until ``until``); returns the manifest.

    A stage that raises keeps a record saying so (``status`` failed, or interrupted on Ctrl-C, with the
    ``error``); the next run calls it again and it resumes. Only a process killed outright leaves
    ``running``."""
    _check_stage(start, "--from")
    _check_stage(until, "--until")
    run_dir = Path(cfg.run_dir)
    hashes = stage_hashes(cfg)
    manifest = read_manifest(run_dir)
    records = manifest["stages"]
    for line in _source_lines(hashes, records):
        echo(line)
    adopted = adopt_legacy_records(records, cfg, hashes)
    forced = set(STAGE_NAMES[STAGE_NAMES.index(start):]) if start else set()
    last = STAGE_NAMES.index(until) if until else len(STAGES) - 1

    def up_to_date(stage: Stage) -> bool:
        record = records.get(stage.name)
        return (record is not None and record.get("key") == hashes[stage.name]["key"]
                and record.get("status") == "done" and stage.name not in forced
                and all((run_dir / o).exists() for o in stage.outputs(cfg)))  # fmt: skip

    if not all(up_to_date(stage) for stage in STAGES[: last + 1]):
        _check_data(cfg)  # before the run directory is made or anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(cfg)
    if adopted:
        echo(f"[manifest] {adopted} stage record(s) of aesipe 0.1 adopted: same settings, nothing redone")
        _write_manifest(run_dir, manifest)
    for stage in STAGES[: last + 1]:
        record = records.get(stage.name)
        key = hashes[stage.name]["key"]
        outputs = stage.outputs(cfg)
        if up_to_date(stage):
            echo(f"[{stage.name}] up to date, skipped")
            continue
        same_key = record is not None and record.get("key") == key
        if record is not None and (not same_key or stage.name in forced):
            _remove_outputs(run_dir, list(dict.fromkeys([*record.get("outputs", []), *outputs])))
            echo(f"[{stage.name}] {'redone' if stage.name in forced else _why_redone(record, hashes[stage.name])}: "
                 "old outputs removed")
        elif record is not None and record.get("status") in ("running", "failed", "interrupted"):
            if record["status"] == "failed":
                echo(f"[{stage.name}] resuming after a failure ({record.get('error', 'no reason recorded')})")
            else:
                echo(f"[{stage.name}] resuming an interrupted run")
        echo(f"[{stage.name}] running")
        records[stage.name] = {**hashes[stage.name], "schema": SCHEMA_VERSION, "status": "running", "outputs": outputs,
                               "started": _now()}
        _write_manifest(run_dir, manifest)
        try:
            metrics = run_stage(stage, cfg)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            records[stage.name].update(status=status, finished=_now(), error=_one_line(exc)[:300])
            _write_manifest(run_dir, manifest)
            raise
        records[stage.name].update(status="done", finished=_now(), **({"metrics": metrics} if metrics else {}))
        _write_manifest(run_dir, manifest)
    return manifest


def _source_lines(hashes: dict[str, dict], records: dict[str, dict]) -> list[str]:
    """One line per source that changed since the recorded run: which stages read it (they, and what
    depends on them, are redone)."""
    lines = []
    for name in SOURCES:
        readers = [s.name for s in STAGES if s.name in records and records[s.name].get("inputs", {}).get(name)
                   != hashes[s.name]["inputs"].get(name)]
        if readers:
            lines.append(f"[{name}] changed: {', '.join(readers)} read them, so they and what depends on them are redone")
    return lines


def run_stage(stage: Stage, cfg: RunConfig) -> dict:
    """Run one stage; returns its metrics (the evaluations' mIoU and split)."""
    return stage.run(cfg)
