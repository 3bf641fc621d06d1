"""User-facing errors and the command-line wrapper that turns them into one sentence and an exit code.

Its helpers live beside it: scaseg/signals.py (SIGTERM and SIGHUP unwind like Ctrl-C) and scaseg/memory.py (an
allocation checked before it is made; a failed one named in the sentence)."""
from __future__ import annotations

import functools
import importlib
import os
import sys
from typing import Any, Callable, Optional


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
    from scaseg.memory import allocation_failure
    from scaseg.signals import SIGINT, signal_name, stop_signals

    with stop_signals() as stop:
        try:
            code = _invoke(app, name)
        except (KeyboardInterrupt, Interrupted) as exc:
            what = str(exc) if isinstance(exc, Interrupted) and str(exc) else interrupted
            signum = stop.signum or SIGINT
            by = "" if signum == SIGINT else f" by {signal_name(signum)}"
            _say(f"{name}: interrupted{by}{_one_line(what) if what[:1] in ',;:' else ' ' + _one_line(what)}")
            sys.exit(128 + signum)
        except Exception as exc:
            memory = allocation_failure(exc)
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


def _say(line: str) -> None:
    # After SIGHUP the terminal may be gone: a failed write must not turn the sentence into a traceback.
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


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


def _abort_classes(click: Any) -> tuple[type[BaseException], ...]:
    """click's Abort (Ctrl-C at a prompt, EOF): in click itself or, for typer's vendored copy, in typer.exceptions."""
    found = [getattr(click.exceptions, "Abort", None)]
    try:
        from typer import exceptions as typer_exceptions

        found.append(getattr(typer_exceptions, "Abort", None))
    except ImportError:
        pass
    return tuple(c for c in found if isinstance(c, type) and issubclass(c, BaseException)) or (KeyboardInterrupt,)


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
