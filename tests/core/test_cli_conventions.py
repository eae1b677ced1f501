"""The conventions every aesipe program follows (aesipe/utils/cli.py): help when called bare, commands in the
order a user runs them with their whole one-line help, capitalised arguments; the thread policy of the
programs that run torch (aesipe/utils/threads.py)."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aesipe.utils.threads import apply_thread_policy

BIN = Path(sys.executable).parent


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("prog, usage", [
    ("aesipe-train", "Usage: aesipe-train [OPTIONS] COMMAND [ARGS]..."),
    ("aesipe-export", "Usage: aesipe-export [OPTIONS] SOURCE [OUT]"),
    ("aesipe-label", "Usage: aesipe-label [OPTIONS] MODEL INPUT OUTPUT"),
])
def test_a_bare_program_prints_its_help(prog, usage):
    result = _run(BIN / prog, env={"COLUMNS": "80"})
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and not result.stdout and lines[0] == usage, result.stderr[:500]
    assert len(lines) > 8 and "error:" not in result.stderr  # the help as help, not one squashed error line
    helped = _run(BIN / prog, "--help")
    assert helped.returncode == 0 and helped.stdout.splitlines()[0] == usage


def test_a_bare_command_prints_its_help_and_one_without_required_arguments_runs():
    from aesipe.train.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["eval-cam"])
    assert result.exit_code == 2 and "Usage: aesipe-train eval-cam [OPTIONS] RUN_DIR [OVERRIDES]..." in result.output
    result = runner.invoke(app, ["config"])  # no required argument: it runs (prints the defaults)
    assert result.exit_code == 0 and "[data]" in result.output


def test_train_commands_are_listed_in_the_order_a_user_runs_them_with_their_whole_line():
    from aesipe.train.cli import app
    from aesipe.train.pipeline import STAGE_NAMES

    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "80"})
    rows = result.output.split("Commands:\n", 1)[1].splitlines()
    names = [row.split()[0] for row in rows if row.strip()]
    assert len(names) == len(rows), rows  # one line each: nothing wrapped
    assert names[:3] == ["demo", "synth", "pipeline"] and names[-2:] == ["import-checkpoint", "config"]
    stages = [name for name in names if name in STAGE_NAMES]
    assert stages == [name for name in STAGE_NAMES if name in names] and len(stages) >= 8
    import typer.main

    group = typer.main.get_command(app)
    for row, name in zip(rows, names):
        first = " ".join(inspect.cleandoc(group.commands[name].help).split("\n\n")[0].split())
        assert row.split(None, 1)[1] == first and "..." not in row, row


def test_thread_policy_sleeps_when_others_want_the_cores_and_keeps_the_users_choice():
    env: dict[str, str] = {}
    assert apply_thread_policy(env, load_per_core=1.5) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {}
    assert apply_thread_policy(env, load_per_core=0.5) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {}
    assert apply_thread_policy(env, load_per_core=0.1) and env == {"GOMP_SPINCOUNT": "300000"}  # quiet: spin
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        env = dict(chosen)
        assert not apply_thread_policy(env, load_per_core=3.0) and env == chosen


@pytest.mark.parametrize("module", ["aesipe.train.cli", "aesipe.export.cli"])
def test_torch_programs_apply_the_policy_before_torch_is_imported(module):
    code = ("import atexit, os, sys\n"
            f"from {module} import main\n"
            "loaded = 'torch' in sys.modules\n"
            "atexit.register(lambda: print('torch loaded first:', loaded, '| policy:', os.environ.get('OMP_WAIT_POLICY'),\n"
            "                              os.environ.get('GOMP_SPINCOUNT')))\n"
            "sys.argv = ['prog', '--version']\n"
            "main()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    # PASSIVE on a busy machine, libgomp's spinning made explicit on a quiet one: either way chosen before torch
    assert result.returncode == 0 and ("torch loaded first: False | policy: PASSIVE None" in result.stdout
                                       or "torch loaded first: False | policy: None 300000" in result.stdout), result
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "OMP_WAIT_POLICY": "ACTIVE"})
    assert "policy: ACTIVE" in result.stdout, result


def test_a_usage_error_points_at_the_help_of_the_command_that_was_called():
    result = _run(BIN / "aesipe-train", "eval-cam", "run", "--no-such-option")
    assert result.returncode == 2 and result.stderr.strip() == (
        "aesipe-train: error: No such option: --no-such-option (see aesipe-train eval-cam --help)")
