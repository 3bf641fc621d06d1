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


def _run_ci_to_the_tests(tmp_path: Path, pytest_rc: int = 0, **env_extra: str) -> tuple[subprocess.CompletedProcess, Path, str]:
    """Run .ci/run with a python3 whose "venv" installs nothing and whose pytest, as the real suite does, fills
    TMPDIR (pytest-of-* included) and its --basetemp; returns (result, the caller's TMPDIR, what pytest was given)."""
    template = tmp_path / "template" / "bin"
    template.mkdir(parents=True)
    (template / "activate").write_text('PATH="$(dirname "${BASH_SOURCE[0]}"):$PATH"\n')
    (template / "python").write_text("#!/bin/sh\nexit 0\n")
    record = tmp_path / "pytest-args"
    (template / "pytest").write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "TMPDIR=$TMPDIR" "$@" > "{record}"\n'  # one argument a line: an empty one shows
        'mkdir -p "$TMPDIR/pytest-of-me/pytest-0/t0" && echo big > "$TMPDIR/pytest-of-me/pytest-0/t0/f"\n'
        'for a in "$@"; do case "$a" in --basetemp=*) d="${a#--basetemp=}"; mkdir -p "$d/t1" && echo big > "$d/t1/f";; esac; done\n'
        f"exit {pytest_rc}\n")
    for name in ("python", "pytest"):
        (template / name).chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python3"
    stub.write_text(f'#!/bin/sh\nmkdir -p "$3" && cp -r "{template.parent}/." "$3" && touch "$3/marker"\n')
    stub.chmod(0o755)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmpdir)}
    env.pop("SCASEG_CI_VENV", None)
    env.pop("SCASEG_CI_KEEP_VENV", None)
    env.update(env_extra)
    done = subprocess.run(["bash", str(ROOT / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60)
    return done, tmpdir, record.read_text() if record.exists() else ""


@pytest.mark.parametrize("pytest_rc", [0, 1])
def test_the_suites_temporary_folders_go_with_the_run(tmp_path, pytest_rc):
    done, tmpdir, given = _run_ci_to_the_tests(tmp_path, pytest_rc)
    assert done.returncode == pytest_rc, done.stderr
    (folder,) = [line for line in given.split() if line.startswith("TMPDIR=")]
    (base,) = [arg for arg in given.split() if arg.startswith("--basetemp=")]
    for path in (folder.split("=", 1)[1], base.split("=", 1)[1]):  # inside the run's own temporary folder
        assert Path(path).parent.parent.parent == tmpdir, given
    assert list(tmpdir.iterdir()) == [], "left behind: " + ", ".join(str(p) for p in tmpdir.rglob("*"))


def test_ci_runs_every_tier_the_slow_tests_included(tmp_path):
    done, _, given = _run_ci_to_the_tests(tmp_path)
    assert done.returncode == 0, done.stderr
    args = given.splitlines()
    assert "-m" in args and args[args.index("-m") + 1] == "", "CI must override addopts' -m \"not slow\":\n" + given
    assert "no:cacheprovider" in args, "CI must not leave .pytest_cache in the checkout:\n" + given


def test_keeping_the_environment_does_not_keep_the_suites_folders(tmp_path):
    done, tmpdir, given = _run_ci_to_the_tests(tmp_path, SCASEG_CI_KEEP_VENV="1")
    assert done.returncode == 0, done.stderr
    (kept,) = tmpdir.glob("*/venv/marker")
    assert f"kept the virtual environment {kept.parent}" in done.stderr
    assert [p.name for p in tmpdir.glob("*/*")] == ["venv"]


def test_a_callers_environment_still_gets_the_suites_folders_removed(tmp_path):
    mine = tmp_path / "my-venv"
    done, tmpdir, given = _run_ci_to_the_tests(tmp_path, SCASEG_CI_VENV=str(mine))
    assert done.returncode == 0, done.stderr
    assert (mine / "marker").is_file() and "--basetemp=" in given
    assert list(tmpdir.iterdir()) == []


@pytest.mark.parametrize("already", [False, True])
def test_the_build_folders_pip_writes_into_the_checkout_go_unless_they_were_there(tmp_path, already):
    # A copy of .ci/run in a checkout of its own: setuptools writes build/ and scaseg.egg-info/ beside pyproject.
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    (repo / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    if already:
        (repo / "build").mkdir()
        (repo / "build" / "mine").write_text("the caller's")
    template = tmp_path / "template" / "bin"
    template.mkdir(parents=True)
    (template / "activate").write_text('PATH="$(dirname "${BASH_SOURCE[0]}"):$PATH"\n')
    (template / "python").write_text("#!/bin/sh\nmkdir -p build/lib scaseg.egg-info\nexit 0\n")  # what pip leaves
    (template / "pytest").write_text("#!/bin/sh\nexit 0\n")
    for name in ("python", "pytest"):
        (template / name).chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nmkdir -p "$3" && cp -r "{template.parent}/." "$3"\n')
    (bin_dir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    env.pop("SCASEG_CI_VENV", None)
    env.pop("SCASEG_CI_KEEP_VENV", None)
    done = subprocess.run(["bash", str(repo / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not (repo / "scaseg.egg-info").exists()
    if already:
        assert (repo / "build" / "mine").read_text() == "the caller's"
    else:
        assert not (repo / "build").exists()
