"""``aesipe-train``: thin Typer commands; each parses, resolves the run config and calls a stage function."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from aesipe import __version__
from aesipe.utils.errors import run_cli

PROG = "aesipe-train"

app = typer.Typer(
    name=PROG,
    help="Train AE-SIPE, IRN and DeepLabV3 from image-level tags, stage by stage or as one pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """Each stage reads and writes one run directory (see docs/ARCHITECTURE.md)."""


# Stage commands live in their own modules and register themselves on `app`.
from . import commands_data, commands_refine, commands_stage1  # noqa: E402

commands_data.register(app)
commands_stage1.register(app)
commands_refine.register(app)


def main() -> None:
    run_cli(app, PROG)


if __name__ == "__main__":  # torchrun --nproc_per_node=N -m aesipe.train.cli train RUN_DIR ...
    main()
