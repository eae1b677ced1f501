"""`aesipe-export` (being built: says so and exits non-zero)."""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from aesipe import __version__

PROG = "aesipe-export"
app = typer.Typer(name=PROG, add_completion=False, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


@app.command()
def _main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True)] = None,
) -> None:
    typer.echo(f"{PROG}: not built yet in this version", err=True)
    raise typer.Exit(2)


def main() -> None:
    app()
