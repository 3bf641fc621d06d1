"""scaseg.errors: one line and exit 2 for bad input; every command's --version and --help."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from paths import ROOT


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

    with open(ROOT / "pyproject.toml", "rb") as f:
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


def _run_app(body: str, *args: str, preexec=None) -> subprocess.CompletedProcess:
    """``body`` defines app(); it runs through run_cli as scaseg-x in a fresh interpreter."""
    code = ("import os, signal, sys, time\nfrom pathlib import Path\nfrom scaseg.errors import run_cli, ScasegError\n"
            + body + "\nrun_cli(app, prog='scaseg-x')\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          preexec_fn=preexec)


@pytest.mark.parametrize("name,code,second", [("SIGTERM", 143, "SIGINT"), ("SIGHUP", 129, "SIGTERM"),
                                              ("SIGINT", 130, "SIGINT"), ("SIGTERM", 143, "SIGHUP")])
def test_a_stop_signal_unwinds_like_ctrl_c_and_a_second_one_waits_for_the_cleanup(tmp_path, name, code, second):
    # The cleanup is slow and receives a second signal while it runs: it must still finish.
    body = (
        "def app():\n"
        "    tmp = Path(sys.argv[1]); tmp.write_text('half')\n"
        f"    try:\n        os.kill(os.getpid(), signal.{name}); time.sleep(30); print('not stopped')\n"
        f"    finally:\n        os.kill(os.getpid(), signal.{second}); time.sleep(0.2); tmp.unlink()\n"
    )
    done = _run_app(body, str(tmp_path / "partial.tmp"))
    assert done.returncode == code, done.stderr
    by = "" if name == "SIGINT" else f" by {name}"
    assert done.stderr.strip() == f"scaseg-x: interrupted{by}; nothing was written"
    assert "not stopped" not in done.stdout
    assert not (tmp_path / "partial.tmp").exists()


def test_a_third_signal_leaves_a_stuck_cleanup():
    import time

    body = ("def app():\n    try:\n        os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n"
            "    finally:\n        os.kill(os.getpid(), signal.SIGINT); time.sleep(0.2)\n"
            "        os.kill(os.getpid(), signal.SIGINT); time.sleep(30); print('waited')\n")
    start = time.monotonic()
    done = _run_app(body)
    assert time.monotonic() - start < 20
    assert done.returncode == 143 and done.stderr.strip() == "scaseg-x: interrupted by SIGTERM; nothing was written"
    assert "waited" not in done.stdout


@pytest.mark.parametrize("name", ["SIGHUP", "SIGTERM"])
def test_a_signal_the_caller_ignores_stays_ignored(name):
    # nohup ignores SIGHUP (and a caller may ignore SIGTERM): the command then runs to its end.
    import signal

    body = f"def app():\n    os.kill(os.getpid(), signal.{name}); time.sleep(0.2); print('finished')\n"
    done = _run_app(body, preexec=lambda: signal.signal(getattr(signal, name), signal.SIG_IGN))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "finished" and done.stderr == ""


def test_run_cli_restores_the_signal_handlers(monkeypatch):
    import signal

    from scaseg.errors import ScasegError, run_cli

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    seen = {}

    def app():
        seen.update({s: signal.getsignal(s) for s in before})
        raise ScasegError("no")

    with pytest.raises(SystemExit):
        run_cli(app, prog="scaseg-x")
    assert all(seen[s] != before[s] for s in before)  # installed while the command ran
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.parametrize("raise_it,expect", [
    ("import numpy as np; np.empty((2**20, 2**20, 2**10), np.uint8)", "allocating 1 PiB in numpy"),
    ("raise RuntimeError('[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can\\'t allocate memory: "
     "you tried to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)')", "allocating 4 GiB in PyTorch"),
    ("import cv2, numpy as np; cv2.resize(np.zeros((9, 9), np.uint8), (300000, 300000))",
     "allocating 83.8 GiB in OpenCV"),
    ("raise ImportError('libtorch_cpu.so: failed to map segment from shared object')", "loading libtorch_cpu.so"),
    ("raise MemoryError()", "allocating in Python"),
    ("try:\n        raise RuntimeError('Failed to allocate memory for requested buffer of size 201326592')\n"
     "    except RuntimeError:\n        raise ScasegError('ONNX Runtime could not run m.onnx')", "allocating 192 MiB in"),
])
def test_an_allocation_failure_is_one_sentence(raise_it, expect):
    done = _run_app(f"def app():\n    {raise_it}\n")
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, done.stderr
    assert line.startswith(f"scaseg-x: error: out of memory while {expect}"), line
    assert line.endswith("; nothing was written"), line


@pytest.mark.parametrize("raise_it,expect", [
    ("raise ScasegError('--batch 100000 needs 36 GiB: out of memory here')", "scaseg-x: error: --batch 100000 needs"),
    ("raise ValueError('Failed to allocate a seat')", "Traceback"),  # a program error stays a traceback
])
def test_only_allocation_failures_become_the_memory_sentence(raise_it, expect):
    done = _run_app(f"def app():\n    {raise_it}\n")
    assert expect in done.stderr and "out of memory while" not in done.stderr, done.stderr
