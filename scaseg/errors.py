"""User-facing errors, the command-line wrapper that turns them into one sentence and an exit code, and the one
check that an allocation fits in the memory available before it is made (images before decoding, scaseg-bench's
batch, scaseg-export's estimate)."""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import sys
import threading
from typing import Any, Callable, Iterator, Optional


class ScasegError(Exception):
    """A problem the user can fix (bad path, wrong checkpoint, empty folder...).

    The message is one sentence that says what was expected. Commands print it
    without a traceback and exit with code 2.
    """


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM, SIGHUP) reached a command that knows what it kept; the message says what.

    It is printed right after ``PROG: interrupted``, so it starts with its own separator:
    ``Interrupted(" after 12 frames; the output so far is saved in out.mp4")``.
    """


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM and SIGHUP give 128 + their number (run_cli)

# The signals that stop a command. Each one unwinds like Ctrl-C (a KeyboardInterrupt in the main thread), so every
# `finally` and `except BaseException` on the way out runs: temporaries go, worker processes are stopped.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

#: Optional packages -> the pyproject extra that installs them (tests/test_badinput_card_path.py checks the names).
EXTRAS = {"torch": "export", "onnx": "export", "onnxsim": "export", "onnxscript": "export", "safetensors": "export",
          "tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt-rtx", "tritonclient": "triton", "openvino": "openvino"}


def missing_package(module: str, purpose: str = "this", extra: Optional[str] = None) -> ScasegError:
    """The one sentence for an optional package that is not installed, naming the extra that installs it."""
    top = module.split(".")[0]
    extra = extra or EXTRAS.get(top, "dev")
    return ScasegError(f"{purpose} needs the {top} package, which is not installed: pip install \".[{extra}]\" in "
                       "the scaseg checkout")


def require_package(module: str, purpose: str, extra: Optional[str] = None) -> Any:
    """Import an optional package, or raise :func:`missing_package`'s sentence."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing_package(module, purpose, extra) from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


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
    import signal

    return [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]  # no SIGHUP on Windows


@contextlib.contextmanager
def _stop_signals() -> Iterator[type[_Stop]]:
    """Make SIGINT, SIGTERM and SIGHUP unwind like Ctrl-C while the block runs; restore the handlers after it.

    A signal the caller ignores (``nohup`` ignores SIGHUP, a shell's background job SIGINT) stays ignored.
    Outside the main thread (where Python cannot set handlers) nothing changes.
    """
    import signal

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
    import signal

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
    import signal

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


def _interrupt_guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    # Typer turns a KeyboardInterrupt raised in a command into a silent exit 130 before any caller sees it; an
    # exception of our own passes through it untouched.
    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted("") from None

    return guarded


def run_cli(app: Callable[..., object], prog: Optional[str] = None, interrupted: str = "; nothing was written") -> None:
    """Run a Typer app (or any callable) as a console command, with the project's error contract.

    ScasegError and usage errors (a bad option value, a missing argument) -> ``PROG: error: ...`` on one line,
    exit 2, and so is an optional package (``EXTRAS``) that is not installed, naming the extra that installs it;
    Ctrl-C -> ``PROG: interrupted<what was kept>``, exit 130, where ``interrupted`` is the default
    account of what a run leaves behind and a command that knows better raises Interrupted(account).
    SIGTERM and SIGHUP unwind the same way (``PROG: interrupted by SIGTERM<what was kept>``) and exit with
    128 + the signal's number (143, 129), the status a shell reports for a process that signal ended: a
    caller (a scheduler, torchrun, a script) reads the same code as before, and every temporary is gone.
    A failed allocation (MemoryError, numpy's, PyTorch's, OpenCV's or ONNX Runtime's; a shared library that
    cannot be mapped) -> ``PROG: error: out of memory while ...<account>``, exit 2.
    ``--help`` and ``--version`` work as usual. Set SCASEG_DEBUG=1 to see the traceback instead.
    """
    name = prog or os.path.basename(sys.argv[0]) or "scaseg"
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 (surrogates) prints as \udcff, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    with _stop_signals() as stop:
        try:
            code = _invoke(app, name)
        except (KeyboardInterrupt, Interrupted) as exc:
            what = str(exc) if isinstance(exc, Interrupted) and str(exc) else interrupted
            signum = stop.signum or _SIGINT
            by = "" if signum == _SIGINT else f" by {_signal_name(signum)}"
            _say(f"{name}: interrupted{by}{_one_line(what) if what[:1] in ',;:' else ' ' + _one_line(what)}")
            sys.exit(128 + signum)
        except Exception as exc:
            memory = _allocation_failure(exc)
            if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in EXTRAS:
                exc = missing_package(exc.name or "", name)  # an optional package imported where no one checked
            if os.environ.get("SCASEG_DEBUG") or (memory is None and not isinstance(exc, ScasegError)):
                raise
            if memory is not None:
                _say(f"{name}: error: out of memory while {memory} (free memory, raise this process's memory limit or give a "
                     f"smaller input){interrupted if interrupted[:1] in ',;:' else ''}")
            else:
                _say(f"{name}: error: {_one_line(str(exc))}")
            sys.exit(EXIT_USER_ERROR)
        finally:
            from scaseg.progress import set_quiet

            set_quiet(False)  # -q is this command's; code that runs after it in the same process shows progress again
    sys.exit(code)  # as click's standalone mode does, also on success


_SIGINT = 2  # signal.SIGINT on every platform Python supports


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _say(line: str) -> None:
    # After SIGHUP the terminal may be gone: a failed write must not turn the sentence into a traceback.
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


# What allocators say when they fail. Matched on the exception's class and module and on its message, never by
# importing the library (this module stays light): numpy's _ArrayMemoryError is a MemoryError; PyTorch raises a
# RuntimeError ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory"), OpenCV a cv2.error
# ("Insufficient memory", "Failed to allocate"), ONNX Runtime its own classes ("Failed to allocate memory",
# "bad allocation", "std::bad_alloc"); a shared library that cannot be mapped is an ImportError or OSError.
_ALLOCATOR_MESSAGE = re.compile(r"can't allocate memory|cannot allocate memory|failed to allocate|insufficient memory|"
                                r"out of memory|bad[_ ]alloc|failed to map segment", re.IGNORECASE)
_SIZE_IN_BYTES = re.compile(r"(?:allocate|size of|buffer of size)\s+(\d+)(?:\s*bytes)?", re.IGNORECASE)
_SIZE_WITH_UNIT = re.compile(r"allocate\s+([\d.]+)\s*([KMGTPE]?i?B)\b")
_LIBRARY = re.compile(r"([\w.+-]+\.(?:so|dylib|dll)[\w.]*)")
_LIBRARIES = (("torch", "PyTorch"), ("cv2", "OpenCV"), ("onnxruntime", "ONNX Runtime"), ("numpy", "numpy"),
              ("tensorrt", "TensorRT"))


def _allocation_failure(exc: BaseException) -> Optional[str]:
    """For an allocation failure in ``exc`` or its causes: what was being done ("allocating 4 GiB in PyTorch")."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, ScasegError):  # our own sentences may speak of memory; they are not failures
            what = _describe_allocation(current)
            if what is not None:
                return what
        current = current.__cause__ or current.__context__
    return None


def _describe_allocation(exc: BaseException) -> Optional[str]:
    text = str(exc)
    module = type(exc).__module__ or ""
    where = next((label for prefix, label in _LIBRARIES if module.split(".")[0] == prefix), "")
    if isinstance(exc, (ImportError, OSError)):
        if "failed to map segment" not in text and getattr(exc, "errno", None) != 12:  # ENOMEM
            return None
        library = _LIBRARY.search(text)
        return f"loading {library.group(1)}" if library else "loading a shared library"
    if not isinstance(exc, MemoryError):
        if not _ALLOCATOR_MESSAGE.search(text):
            return None
        if not where and not isinstance(exc, RuntimeError):
            return None  # an unknown library's exception that happens to mention memory
        if not where:
            where = "PyTorch" if "Allocator" in text or "CUDA out of memory" in text else ""
    elif not where:
        where = "numpy" if type(exc).__name__ == "_ArrayMemoryError" else "Python"
    size = _allocation_size(text)
    return f"allocating {size + ' ' if size else ''}in {where or 'a library'}"


def _allocation_size(text: str) -> str:
    with_unit = _SIZE_WITH_UNIT.search(text)
    if with_unit:
        return f"{float(with_unit.group(1)):g} {with_unit.group(2)}"
    in_bytes = _SIZE_IN_BYTES.search(text)
    if in_bytes:
        n = float(in_bytes.group(1))
        for unit in ("bytes", "KiB", "MiB", "GiB"):
            if n < 1024 or unit == "GiB":
                return f"{n:.3g} {unit}" if unit != "bytes" else f"{int(n)} bytes"
            n /= 1024
    return ""


def _invoke(app: Callable[..., object], name: str) -> int:
    """Call ``app``; a Typer app runs through click without its standalone handling, so that errors reach us."""
    try:
        import typer
        from typer import main as typer_main
    except ImportError:  # a plain callable in an environment without typer
        app()
        return 0
    if not isinstance(app, typer.Typer):
        app()
        return 0
    command = typer_main.get_command(app)
    commands = list(getattr(command, "commands", {}).values()) or [command]
    for cmd in commands:
        if cmd.callback is not None and not getattr(cmd.callback, "_scaseg_guarded", False):
            cmd.callback = _interrupt_guard(cmd.callback)
            cmd.callback._scaseg_guarded = True  # type: ignore[attr-defined]
    click = _click_module()
    try:
        result = command.main(args=sys.argv[1:], prog_name=name, standalone_mode=False)
    except click.exceptions.UsageError as exc:
        hint = f" (see {name} --help)" if "--help" not in exc.format_message() else ""
        raise ScasegError(_one_line(exc.format_message()) + hint) from None
    except click.exceptions.ClickException as exc:
        raise ScasegError(_one_line(exc.format_message())) from None
    except _abort_classes(click):
        raise KeyboardInterrupt from None
    # Non-standalone click returns the exit code of an Exit (0 after --help / --version) or the command's value.
    if isinstance(result, int) and not isinstance(result, bool):
        if result == EXIT_INTERRUPTED:  # Ctrl-C while click parsed the command line
            raise KeyboardInterrupt
        return result
    return 0


def _abort_classes(click: Any) -> tuple[type, ...]:
    """click's Abort (Ctrl-C at a prompt, EOF): in click itself or, for typer's vendored copy, in typer.exceptions."""
    found = [getattr(click.exceptions, "Abort", None)]
    try:
        from typer import exceptions as typer_exceptions

        found.append(getattr(typer_exceptions, "Abort", None))
    except ImportError:
        pass
    return tuple(c for c in found if isinstance(c, type)) or (KeyboardInterrupt,)


def _click_module() -> Any:
    """The click Typer uses: its vendored copy (typer >= 0.20) or the click package."""
    try:
        from typer import _click  # type: ignore[attr-defined]

        return _click
    except ImportError:
        import click

        return click


def version_option(prog: str) -> Any:
    """A ``--version`` option for a Typer command: prints ``PROG VERSION`` and exits 0."""
    import typer

    def show(value: bool) -> None:
        if value:
            from scaseg import __version__

            typer.echo(f"{prog} {__version__}")
            raise typer.Exit()

    return typer.Option(False, "--version", callback=show, is_eager=True, help="Print the version and exit.")


GiB = 2**30
#: refuse an allocation above available / MEMORY_MARGIN: the sizes checked are estimates, and the process needs room
MEMORY_MARGIN = 1.10


def available_memory() -> Optional[int]:
    """Memory this process can still take, in bytes: MemAvailable, capped by a cgroup v2 limit; None where neither
    is known (then no allocation is refused for want of memory)."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:  # a container's limit (cgroup v2) can be far below the machine's free memory
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            import psutil  # type: ignore[import-not-found]

            found.append(int(psutil.virtual_memory().available))
        except ImportError:
            pass
    return min(found) if found else None


def format_bytes(n: float) -> str:
    """``1.5 GiB``, ``12.0 MiB``: sizes in the memory sentences."""
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / 2**20:.1f} MiB"


def check_memory(nbytes: float, what: str, hint: str = "", error: type[ScasegError] = ScasegError) -> None:
    """Refuse, in one sentence and before it is made, an allocation of about ``nbytes`` that the memory available
    now cannot hold: ``<what> needs about X GiB of memory, but Y GiB is available<hint>``."""
    have = available_memory()
    if have is not None and nbytes * MEMORY_MARGIN > have:
        raise error(f"{what} needs about {format_bytes(nbytes)} of memory, but {format_bytes(have)} is available{hint}")
