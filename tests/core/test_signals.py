"""scaseg.signals: stop signals unwind like Ctrl-C inside stop_signals, wait during starting_workers, and a worker
leaves them to its parent (the commands' behaviour under signals: tests/test_badinput_signals.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from badinput import env
from scaseg.signals import STOP_SIGNALS, signal_name, starting_workers, stop_signals

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _kill(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # the handler runs between bytecodes of the main thread


def test_a_stop_signal_unwinds_like_ctrl_c_and_the_handlers_come_back() -> None:
    before = {name: signal.getsignal(getattr(signal, name)) for name in STOP_SIGNALS}
    with stop_signals() as stop:
        with pytest.raises(KeyboardInterrupt):
            _kill(signal.SIGTERM)
        assert stop.signum == signal.SIGTERM and stop.count == 1
    assert {name: signal.getsignal(getattr(signal, name)) for name in STOP_SIGNALS} == before
    assert stop.signum is None and stop.count == 0  # reset for the next command in this process


def test_a_second_signal_lets_the_cleanup_finish_and_a_third_unwinds_again() -> None:
    with stop_signals() as stop:
        with pytest.raises(KeyboardInterrupt):
            _kill(signal.SIGHUP)
        _kill(signal.SIGINT)  # the second: no exception, the cleanup goes on
        with pytest.raises(KeyboardInterrupt):
            _kill(signal.SIGTERM)
        assert stop.count == 3 and stop.signum == signal.SIGHUP  # the first one is what the command reports


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does
    try:
        with stop_signals():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            _kill(signal.SIGHUP)  # nothing happens
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


BLOCKED = "import signal; print(sorted(signal.Signals(s).name for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])))"


def _blocked_in_child() -> set[str]:
    out = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, env=env(), timeout=60)
    return set(eval(out.stdout))


def test_workers_start_with_the_stop_signals_blocked_and_the_mask_comes_back() -> None:
    stops = set(STOP_SIGNALS)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert not stops & _blocked_in_child()
    with starting_workers():
        assert {signal.Signals(x).name for x in signal.pthread_sigmask(signal.SIG_BLOCK, [])} >= stops
        assert _blocked_in_child() >= stops  # inherited through fork and exec: no worker meets the default action
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_signal_names() -> None:
    assert signal_name(int(signal.SIGTERM)) == "SIGTERM" and signal_name(int(signal.SIGHUP)) == "SIGHUP"
    assert signal_name(999) == "signal 999"


WORKER = """
import os, signal, sys, time
from scaseg.signals import worker_init
worker_init(int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid())
os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGINT)
print("alive", flush=True)
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
print("not orphaned", flush=True)
"""


def test_a_worker_ignores_stop_signals_and_exits_when_its_parent_is_gone() -> None:
    alive = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, env=env(), timeout=60)
    assert alive.returncode == 0 and alive.stdout.split() == ["alive", "not", "orphaned"], alive.stderr
    # A parent pid that is not this process's parent: the watch sees it gone and exits within about a second.
    start = time.monotonic()
    orphan = subprocess.run([sys.executable, "-c", WORKER, "1", "20"], capture_output=True, text=True, env=env(),
                            timeout=60)
    assert orphan.returncode == 1 and "not orphaned" not in orphan.stdout, orphan.stderr
    assert time.monotonic() - start < 15
