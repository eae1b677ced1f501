"""``aesipe-train``: thin Typer commands; each parses, resolves the run config and calls a stage function."""
from __future__ import annotations

import importlib.util
import sys

from aesipe.constants import PROG_TRAIN as PROG
from aesipe.utils.cli import make_app, run_cli, version_option

app = make_app(PROG, "Train AE-SIPE, IRN and DeepLabV3 from image-level tags, stage by stage or as one pipeline.",
               no_args_is_help=True)


@app.callback()
def _root(version: version_option(PROG) = None) -> None:
    """Each stage reads and writes one run directory (see docs/ARCHITECTURE.md)."""


# Stage commands live in their own modules and register themselves on `app`.
from . import commands_data, commands_refine, commands_review, commands_stage1  # noqa: E402

commands_data.register(app)
commands_stage1.register(app)
commands_refine.register(app)
commands_review.register(app)


def main() -> None:
    # The light install (`aesipe[cpu]`) has the command but not torch: one line, exit 2, before any stage runs.
    missing = [name for name in ("torch", "torchvision") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"{PROG}: error: training needs {' and '.join(missing)}: pip install 'aesipe[train]'", file=sys.stderr)
        sys.exit(2)
    run_cli(app, PROG)


if __name__ == "__main__":  # torchrun --nproc_per_node=N -m aesipe.train.cli train RUN_DIR ...
    main()
