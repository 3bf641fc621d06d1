""".ci/run leaves nothing behind: its temporary virtual environment goes on exit unless SCASEG_CI_KEEP_VENV=1."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_ci(tmp_path: Path, **env_extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    # A python3 that makes the "venv" folder and then fails, as a broken install would: the run stops there.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python3"
    stub.write_text('#!/bin/sh\nmkdir -p "$3" && echo made > "$3/marker"\nexit 3\n')
    stub.chmod(0o755)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmpdir), **env_extra}
    env.pop("SCASEG_CI_VENV", None)
    env.update(env_extra)
    done = subprocess.run(["bash", str(ROOT / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60)
    return done, tmpdir


def test_ci_removes_its_virtual_environment_on_exit(tmp_path):
    done, tmpdir = _run_ci(tmp_path)
    assert done.returncode == 3
    assert list(tmpdir.iterdir()) == []


def test_ci_keeps_it_when_asked_and_says_where(tmp_path):
    done, tmpdir = _run_ci(tmp_path, SCASEG_CI_KEEP_VENV="1")
    assert done.returncode == 3
    (kept,) = tmpdir.glob("*/venv/marker")
    assert f"kept the virtual environment {kept.parent}" in done.stderr


@pytest.mark.parametrize("keep", ["0", "1"])
def test_ci_never_removes_a_folder_of_the_callers(tmp_path, keep):
    mine = tmp_path / "my-venv"
    done, _ = _run_ci(tmp_path, SCASEG_CI_VENV=str(mine), SCASEG_CI_KEEP_VENV=keep)
    assert done.returncode == 3 and (mine / "marker").is_file()
