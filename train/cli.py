"""``aesipe-train``: thin Typer commands; each parses, resolves the run config and calls a stage function."""
from __future__ import annotations

from aesipe.constants import PROG_TRAIN as PROG
from aesipe.utils.cli import add_commands, make_app, run_torch_cli, version_option

from . import commands_data, commands_refine, commands_review, commands_stage1

app = make_app(PROG, "Train AE-SIPE, IRN and DeepLabV3 from image-level tags, stage by stage or as one pipeline.")


@app.callback()
def _root(version: version_option(PROG) = None) -> None:
    """Each stage reads and writes one run directory (see docs/ARCHITECTURE.md)."""


# In the order a user meets them: the demo, data, the pipeline, its stages in pipeline order, then tools.
add_commands(app, [
    ("demo", commands_refine.demo),
    ("synth", commands_data.synth),
    ("pipeline", commands_refine.pipeline),
    ("train", commands_stage1.train),
    ("make-cam", commands_stage1.make_cam),
    ("eval-cam", commands_data.eval_cam),
    ("calibrate", commands_data.calibrate),
    ("crf", commands_data.crf),
    ("ir-label", commands_refine.ir_label),
    ("irn", commands_refine.irn),
    ("make-seg-labels", commands_refine.make_seg_labels),
    ("seg", commands_refine.seg),
    ("eval-seg", commands_refine.eval_seg),
    ("review-queue", commands_review.review_queue),
    ("corrections", commands_review.corrections),
    ("import-checkpoint", commands_stage1.import_checkpoint),
    ("config", commands_stage1.config),
])  # fmt: skip


def main() -> None:
    run_torch_cli(app, PROG, "training", "train")


if __name__ == "__main__":  # torchrun --nproc_per_node=N -m aesipe.train.cli train RUN_DIR ...
    main()
