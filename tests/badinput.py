"""Helpers of the bad-input test modules (test_badinput_*.py): run a command as a user would, check the contract.

The contract (README, "bad input"): exactly one non-empty stderr line ``scaseg-<cmd>: error: ...`` (or
``scaseg-<cmd>: interrupted...``), the exit code (2, or 130 after Ctrl-C), no traceback, and the folder tree unchanged
apart from the intended outputs. Progress bars are switched off (TQDM_DISABLE=1): they are not messages.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import pytest

def _entry_points() -> dict[str, str]:
    import tomllib

    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
        return dict(tomllib.load(f)["project"]["scripts"])


ENTRY_POINTS = _entry_points()  # the console scripts, as pip installs them


# A tqdm bar line ("train:  40%|####      | 2/5 [...]"): progress, not a message (TQDM_DISABLE=1 turns off the bars
# that leave `disable` to tqdm; train's bar sets it itself).
PROGRESS = re.compile(r"^[\w .-]*:\s+\d+%\|")


def env() -> dict[str, str]:
    return {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def command(prog: str, args: Sequence[object]) -> list[str]:
    """What the console script ``prog`` runs, with this interpreter (and this checkout on PYTHONPATH)."""
    module, func = ENTRY_POINTS[prog].split(":")
    code = f"import sys; sys.argv[0] = {prog!r}; from {module} import {func}; {func}()"
    return [sys.executable, "-c", code, *[str(a) for a in args]]


def run(prog: str, args: Sequence[object], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command(prog, args), cwd=cwd, capture_output=True, text=True, env=env(), timeout=timeout)


def tree(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under ``root`` (hidden ones too): relative path -> (kind, size, mtime_ns)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "dir" if p.is_dir() else "file"
            found[str(p.relative_to(root))] = (kind, 0 if kind == "dir" else st.st_size,
                                               0 if kind == "dir" else st.st_mtime_ns)
    return found


def one_line(proc: subprocess.CompletedProcess, prog: str, kind: str = "error") -> str:
    """The single stderr line, checked: starts with ``prog: kind``, no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{proc.stderr}"
    assert lines[0].startswith(f"{prog}: {kind}"), lines[0]
    return lines[0]


def refused(prog: str, args: Sequence[object], cwd: Path, *, expect: str = "", allowed: Sequence[str] = (),
            code: int = 2, timeout: float = 240) -> str:
    """Run; assert exit ``code``, one error line containing ``expect`` and an unchanged tree under ``cwd``."""
    before = tree(cwd)
    proc = run(prog, args, cwd, timeout)
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    line = one_line(proc, prog)
    assert expect.lower() in line.lower(), line
    after = tree(cwd)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed <= set(allowed), f"the tree changed: {sorted(changed)}"
    return line


def interrupt(prog: str, args: Sequence[object], cwd: Path, when: Callable[[], bool], *, timeout: float = 240,
              settle: float = 0.0, sig: int = signal.SIGINT, group: bool = False) -> tuple[subprocess.CompletedProcess, str]:
    """Start the command, send ``sig`` (SIGINT: Ctrl-C) once ``when()`` is true, return (process result, its one
    interrupted line). ``group``: to the whole process group, as a terminal sends Ctrl-C or a hang-up. Checked: the
    exit code (128 + the signal's number) and that no process the command started outlives it."""
    proc = subprocess.Popen(command(prog, args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(), start_new_session=True)  # its own session: what it starts is findable
    deadline = time.monotonic() + timeout
    while not when() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the command ended before the interrupt: {proc.communicate()}"
    time.sleep(settle)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert done.returncode == 128 + sig, (done.returncode, err)
    left = session_processes(proc.pid, wait=10)
    assert not left, f"processes of {prog} still run after it ended: {left}"
    return done, one_line(done, prog, "interrupted")


def session_processes(sid: int, wait: float = 0.0) -> list[str]:
    """The live processes of session ``sid`` (pid and command line; zombies awaiting their reaper are not counted),
    after waiting up to ``wait`` seconds for them to end. Read from /proc (Linux)."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z" and int(fields[3]) == sid:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"{entry} {cmdline[:120]}")
            except (OSError, IndexError, ValueError):
                continue  # ended while we looked
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


_TMPFS: Optional[str] = None


def tmpfs_skip_reason() -> Optional[str]:
    """None where a private tmpfs can be mounted (root, unshare), else why not."""
    global _TMPFS
    if _TMPFS is None:
        if shutil.which("unshare") is None:
            _TMPFS = "unshare (util-linux) is not installed"
        else:
            probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                    "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d && rmdir $d"],
                                   capture_output=True, text=True)
            _TMPFS = "" if probe.returncode == 0 else f"cannot mount a private tmpfs here: {probe.stderr.strip()}"
    return _TMPFS or None


def on_full_disk(prog: str, args: Sequence[object], cwd: Path, disk: Path, size: str, *, full: bool = False,
                 timeout: float = 300) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the command with a ``size`` tmpfs mounted on ``disk`` (private mount namespace); returns (result, what
    the tmpfs held afterwards, hidden entries included). ``full``: fill it before the command starts (files can
    still be created, no byte written: the writability probe passes, the write fails)."""
    reason = tmpfs_skip_reason()
    if reason:
        pytest.skip(reason)
    disk.mkdir(parents=True, exist_ok=True)
    listing = cwd / ".tmpfs-listing"
    fill = 'cat /dev/zero > "$DISK/.filler" 2>/dev/null; ' if full else ""
    script = ('mount -t tmpfs -o size="$SIZE" tmpfs "$DISK" || exit 99; ' + fill +
              '"$@"; rc=$?; rm -f "$DISK/.filler"; ls -A "$DISK" > "$LISTING"; exit $rc')
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *command(prog, args)]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**env(), "LISTING": str(listing), "DISK": str(disk), "SIZE": size})
    assert proc.returncode != 99, proc.stderr
    held = listing.read_text().split() if listing.exists() else []
    listing.unlink(missing_ok=True)
    return proc, held
