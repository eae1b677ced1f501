"""The conventions every aesipe command follows (Typer apps).

- Errors a user can cause -- ``UserError`` (``ConfigError`` is one), Typer's own usage errors (a bad integer, an
  unknown option, a missing argument) -- end as one line ``prog: error: ...`` on stderr and exit 2 (or the
  error's own code), never a traceback or a boxed panel.
- Ctrl-C ends as one line and exit 130; work in progress writes what it finished first.
- Help texts are plain text: brackets such as ``pip install 'aesipe[crf]'`` are shown, not read as markup.
"""
from __future__ import annotations

import functools
import sys
from typing import Annotated, Callable, Optional, TypeVar

import typer

from ..constants import __version__
from .errors import UserError

F = TypeVar("F", bound=Callable)
INTERRUPTED = 130


def make_app(prog: str, help: str | None = None, **kwargs) -> typer.Typer:
    """A Typer app with aesipe's settings (plain help text, no completion install, no pretty tracebacks)."""
    return typer.Typer(name=prog, help=help, add_completion=False, pretty_exceptions_enable=False,
                       rich_markup_mode=None, **kwargs)


def version_option(prog: str):
    """A ``--version`` option for ``prog`` (eager: prints and exits before anything else)."""

    def show(value: bool) -> None:
        if value:
            typer.echo(f"{prog} {__version__}")
            raise typer.Exit()

    return Annotated[Optional[bool], typer.Option("--version", callback=show, is_eager=True,
                                                  help="Print the version and exit.")]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_cli(app: typer.Typer, prog: str) -> None:
    """Run ``app`` as the program ``prog`` with the conventions of this module; always exits."""
    from typer._click.exceptions import ClickException

    def fail(message: str, code: int) -> None:
        print(f"{prog}: error: {_one_line(message)}", file=sys.stderr)
        sys.exit(code)

    try:
        code = app(standalone_mode=False, prog_name=prog)
    except UserError as exc:  # a ConfigError is one too
        fail(str(exc), getattr(exc, "exit_code", 2))
    except ClickException as exc:  # Typer's usage errors: bad value, unknown option, missing argument
        hint = f" (see {prog} --help)" if getattr(exc, "exit_code", 2) == 2 else ""
        fail(exc.format_message() + hint, exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        code = INTERRUPTED
    if code == INTERRUPTED:  # Typer turns a Ctrl-C inside a command into Exit(130)
        print(f"{prog}: interrupted; finished outputs are kept and a re-run resumes", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)


def user_errors(prog: str) -> Callable[[F], F]:
    """Decorator for Typer command bodies run in-process (e.g. by ``CliRunner``): the same one line."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except UserError as exc:  # a ConfigError is one too
                typer.echo(f"{prog}: error: {_one_line(str(exc))}", err=True)
                raise typer.Exit(getattr(exc, "exit_code", 2)) from None

        return inner  # type: ignore[return-value]

    return wrap
