"""One module per stage. Each stage the pipeline runs has a ``run_<stage>(cfg) -> metrics`` function in its
module, and the ``@reads`` declaration above it names the config fields it reads: the pipeline's manifest key of
the stage hashes exactly those (with its ancestors'), so a stage that starts reading a new field must declare
it there, beside the code that reads it (``tests/refine/test_pipeline.py`` records every field each stage
reads in a real run and holds the declarations to it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping


@dataclass(frozen=True)
class Reads:
    """The config parts a stage reads: ``section`` (all its fields) or ``section.field``."""

    always: tuple[str, ...]
    when: Mapping[str, str] = field(default_factory=dict)
    """Parts read only when a boolean field is true, ``{"crf": "seg.test_crf"}``, or while an input the
    pipeline names is present, ``{"corrections.seg_repeat": "corrections"}`` (``pipeline.SOURCES``)."""


def reads(*parts: str, when: Mapping[str, str] | None = None) -> Callable[[Callable], Callable]:
    """Declare the config parts the decorated stage function reads (see the module docstring)."""

    def declare(fn: Callable) -> Callable:
        fn.reads = Reads(tuple(parts), dict(when or {}))
        return fn

    return declare


def seg_train_split(cfg) -> str:
    """The split the segmenter trains on, hence the one make-seg-labels labels by default."""
    return cfg.seg.train_split or cfg.data.train_split


def pipeline_splits(cfg, *names: str) -> list[str]:
    """The splits the pipeline's stages work on: ``train`` (stage 1 and IRN), ``seg`` (the segmenter's
    training split) and ``cam`` (where pseudo-labels are judged), without repeats."""
    lookup = {"train": cfg.data.train_split, "cam": cfg.data.cam_split, "seg": seg_train_split(cfg)}
    return list(dict.fromkeys(lookup[n] for n in names))
