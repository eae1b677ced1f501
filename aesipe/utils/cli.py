"""The conventions every aesipe command follows (Typer apps).

- Errors a user can cause -- ``UserError`` (``ConfigError`` is one), Typer's own usage errors (a bad integer, an
  unknown option, a missing argument) -- end as one line ``prog: error: ...`` on stderr and exit 2 (or the
  error's own code), never a traceback or a boxed panel.
- Ctrl-C ends as one line and exit 130; work in progress writes what it finished first. SIGTERM (what
  schedulers, ``timeout`` and container stops send) and SIGHUP (a closed terminal) take the same path:
  they raise ``Terminated``, a ``KeyboardInterrupt``, wherever the program is, so every clean-up written for
  Ctrl-C runs (aesipe-label writes its report; training keeps its last checkpoint), then one line and exit
  128 + the signal's number, as a shell reports a process that signal ended: 143 (SIGTERM), 129 (SIGHUP). A
  second SIGTERM or SIGHUP during the clean-up is ignored, so the clean-up finishes (SIGKILL still ends it).
- Help texts are plain text: brackets such as ``pip install 'aesipe[crf]'`` are shown, not read as markup.
- Help follows Typer's conventions: a program or command called without the arguments it needs prints its help
  (``no_args_is_help``); commands are listed in the order they are registered (the order a user runs them); a
  command's line in the list is the whole first paragraph of its docstring, never cut with "..."; usage lines
  name arguments in capitals (``aesipe-export [OPTIONS] SOURCE [OUT]``).
- Programs that need torch (``aesipe-train``, ``aesipe-export``) start through ``run_torch_cli``: without torch
  one line naming the extra to install; with it, the thread policy (``aesipe.utils.threads``) is applied
  before torch is first imported.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import signal
import sys
from typing import Annotated, Callable, Iterator, Optional, Sequence, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand

from ..constants import __version__
from .errors import UserError

F = TypeVar("F", bound=Callable)
INTERRUPTED = 130
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: raised where Ctrl-C's KeyboardInterrupt would be, so the same clean-up runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[list[int]]:
    """Within the block, SIGTERM and SIGHUP raise ``Terminated`` in the main thread (the first one; later ones
    are ignored so the clean-up finishes). Yields the list of signals received. Outside the main thread, or
    where a signal does not exist, it changes nothing."""
    received: list[int] = []

    def terminate(signum: int, frame) -> None:
        if not received:
            received.append(signum)
            raise Terminated(signum)

    previous = {}
    for signum in TERMINATING_SIGNALS:
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            previous[signum] = signal.signal(signum, terminate)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Command(TyperCommand):
    """A Typer command with aesipe's help conventions (module docstring): capitalised arguments, the whole
    first paragraph as its line in a program's command list, its help when called without its arguments."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        arguments = [param for param in self.params if isinstance(param, TyperArgument)]
        for param in arguments:
            if param.metavar is None and param.name:
                param.metavar = param.name.upper()
        if any(param.required for param in arguments):
            self.no_args_is_help = True

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar if param.required else f"[{param.metavar}]"
                pieces.append(name + ("..." if param.nargs != 1 else ""))
            else:
                pieces += param.get_usage_pieces(ctx)
        return pieces

    def get_short_help_str(self, limit: int = 45) -> str:
        if self.short_help or not self.help:
            return super().get_short_help_str(limit)
        return _one_line(inspect.cleandoc(self.help).split("\n\n")[0])


class App(typer.Typer):
    """``typer.Typer`` whose commands are ``Command`` unless told otherwise."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or Command, **kwargs)


def make_app(prog: str, help: str | None = None, **kwargs) -> typer.Typer:
    """A Typer app with aesipe's settings (plain help text, no completion install, no pretty tracebacks, help when
    called bare)."""
    kwargs.setdefault("no_args_is_help", True)
    return App(name=prog, help=help, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
               **kwargs)


def add_commands(app: typer.Typer, commands: Sequence[tuple[str, Callable]]) -> None:
    """Register ``(name, function)`` pairs in this order: the order ``--help`` lists them."""
    for name, function in commands:
        app.command(name)(function)


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
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    def fail(message: str, code: int) -> None:
        print(f"{prog}: error: {_one_line(message)}", file=sys.stderr)
        sys.exit(code)

    with signals_as_interrupts() as received:
        try:
            code = app(standalone_mode=False, prog_name=prog)
        except UserError as exc:  # a ConfigError is one too
            fail(str(exc), getattr(exc, "exit_code", 2))
        except NoArgsIsHelpError as exc:  # called bare: the help, as Typer shows it (stderr, exit 2)
            print(exc.format_message(), file=sys.stderr)
            sys.exit(exc.exit_code)
        except ClickException as exc:  # Typer's usage errors: bad value, unknown option, missing argument
            ctx = getattr(exc, "ctx", None)  # the command that was called: its own --help
            hint = f" (see {ctx.command_path if ctx else prog} --help)" if getattr(exc, "exit_code", 2) == 2 else ""
            fail(exc.format_message() + hint, exc.exit_code)
        except (KeyboardInterrupt, typer.Abort):
            code = INTERRUPTED
        if code == INTERRUPTED and received:  # Typer turns a KeyboardInterrupt inside a command into Exit(130)
            name = signal.Signals(received[0]).name
            print(f"{prog}: terminated ({name}); finished outputs are kept and a re-run resumes", file=sys.stderr)
            code = 128 + received[0]
        elif code == INTERRUPTED:
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


def run_torch_cli(app: typer.Typer, prog: str, purpose: str, extra: str) -> None:
    """``run_cli`` for a program that needs torch: the light install (``aesipe[cpu]``) has the command but not
    torch, so one line naming ``extra`` and exit 2 before any work; else the thread policy, then the app."""
    from .threads import apply_thread_policy

    missing = [name for name in ("torch", "torchvision") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"{prog}: error: {purpose} needs {' and '.join(missing)}: pip install 'aesipe[{extra}]'", file=sys.stderr)
        sys.exit(2)
    apply_thread_policy()  # before the first `import torch` (libgomp reads it once)
    run_cli(app, prog)


def parse_scales(text: str, option: str) -> tuple[float, ...]:
    """Scales given on a command line: ``1.0,0.75`` or a range ``START:STOP:STEP`` with both ends included
    (``0.5:1.5:0.05``); positive numbers, at least one. ``option`` names the option in the error."""
    text = text.strip()
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            scales = tuple(round(start + k * step, 6) for k in range(int(round((stop - start) / step)) + 1))
        else:
            scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        scales = ()
    if not scales or not all(0 < scale < float("inf") for scale in scales):
        raise UserError(f"{option} must be numbers like 1.0,0.75 or a range START:STOP:STEP like 0.5:1.5:0.05, "
                        f"all positive, got {text!r}")
    return scales
