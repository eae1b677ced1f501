"""User-facing errors and the CLI convention: one clear line on stderr and a non-zero exit code."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """A problem the user caused and can fix (bad path, bad option, missing stage output).

    ``exit_code`` follows the CLI convention: 2 = usage error, 1 = the work ran but failed.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def run_cli(app: Callable[[], object], prog: str) -> None:
    """Run a Typer app; user errors become ``prog: error: <message>`` and an exit code, never a traceback."""
    from .. import config as _config

    try:
        app()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except _config.ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished outputs are kept and a re-run resumes", file=sys.stderr)
        sys.exit(130)


def user_errors(prog: str) -> Callable[[F], F]:
    """Decorator form for Typer command bodies run in-process (e.g. by CliRunner)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            from .. import config as _config
            import typer

            try:
                return fn(*args, **kwargs)
            except (UserError, _config.ConfigError) as exc:
                code = getattr(exc, "exit_code", 2)
                typer.echo(f"{prog}: error: {exc}", err=True)
                raise typer.Exit(code) from None

        return inner  # type: ignore[return-value]

    return wrap
