"""Stop signals: SIGINT, SIGTERM and SIGHUP unwind a command like Ctrl-C, and a command's worker processes leave
them to it (errors.run_cli installs the handlers; scaseg-synth's workers use starting_workers and worker_init)."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Iterator, Optional

# The signals that stop a command. Each one unwinds like Ctrl-C (a KeyboardInterrupt in the main thread), so every
# `finally` and `except BaseException` on the way out runs: temporaries go, worker processes are stopped.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
SIGINT = int(signal.SIGINT)


class _Stop:
    """The first stop signal this command received (None: none yet), and how many came."""

    signum: Optional[int] = None
    count = 0


def _on_stop_signal(signum: int, frame: Any) -> None:
    _Stop.count += 1
    if _Stop.count == 2:
        # A second signal while the first one unwinds (an impatient double Ctrl-C): raising again would cut a
        # cleanup short and leave its temporary behind, so the cleanup finishes. A third one is insistence: it
        # unwinds again (a cleanup stuck on a stalled stream can be left; a later run removes what it leaves).
        return
    if _Stop.signum is None:
        _Stop.signum = signum
    raise KeyboardInterrupt


def _stop_signal_numbers() -> list[int]:
    return [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]  # no SIGHUP on Windows


@contextlib.contextmanager
def stop_signals() -> Iterator[type[_Stop]]:
    """Make SIGINT, SIGTERM and SIGHUP unwind like Ctrl-C while the block runs; restore the handlers after it.

    A signal the caller ignores (``nohup`` ignores SIGHUP, a shell's background job SIGINT) stays ignored.
    Outside the main thread (where Python cannot set handlers) nothing changes.
    """
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in _stop_signal_numbers():
            handler = signal.getsignal(signum)
            if handler != signal.SIG_IGN:
                previous[signum] = handler
                signal.signal(signum, _on_stop_signal)
    _Stop.signum, _Stop.count = None, 0
    try:
        yield _Stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        _Stop.signum, _Stop.count = None, 0


@contextlib.contextmanager
def starting_workers() -> Iterator[None]:
    """Block the stop signals while a command starts worker processes (the mask is inherited, also through exec).

    A worker thus never runs with the default action (death, before its initializer could ignore the signal);
    a signal that arrives meanwhile reaches this process when the block ends.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _stop_signal_numbers())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def worker_init(parent: int) -> None:
    """Initializer of a command's worker processes (``parent``: the command's pid).

    Stop signals are the parent's to act on: it stops the pool, waits for its workers and removes the temporaries
    (a signal to the whole process group, as a terminal's Ctrl-C or hang-up sends, reaches the workers too; they
    ignore it). Should the parent die without doing so (SIGKILL, the kernel's OOM killer), the worker exits
    within a second instead of waiting for work forever.
    """
    for signum in _stop_signal_numbers():
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _stop_signal_numbers())  # blocked by starting_workers

    def watch() -> None:
        import time

        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="scaseg-parent-watch", daemon=True).start()


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15: how the interrupted line names a signal other than Ctrl-C's."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
