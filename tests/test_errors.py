"""scaseg.errors: one line and exit 2 for bad input; every command's --version and --help."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_run_cli_prints_one_line_and_exits_2():
    code = (
        "from scaseg.errors import run_cli, ScasegError\n"
        "def app():\n    raise ScasegError('the video clip.mp4 has no frames')\n"
        "run_cli(app, prog='scaseg-infer')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == "scaseg-infer: error: the video clip.mp4 has no frames"
    assert "Traceback" not in out.stderr


def _console_scripts() -> dict[str, str]:
    import tomllib

    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(_console_scripts()))
def test_every_command_reports_the_package_version_and_has_help(name):
    import scaseg

    module, func = _console_scripts()[name].split(":")
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {func}; {func}()"
    for flag, expect in (("--version", f"{name} {scaseg.__version__}"), ("--help", "Usage:")):
        done = subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "COLUMNS": "120"})
        assert done.returncode == 0, done.stderr
        assert expect in done.stdout
