"""User-facing errors and the command-line wrapper that turns them into one sentence and an exit code."""
from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, Optional


class ScasegError(Exception):
    """A problem the user can fix (bad path, wrong checkpoint, empty folder...).

    The message is one sentence that says what was expected. Commands print it
    without a traceback and exit with code 2.
    """


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) reached a command that knows what it kept; the message says what.

    It is printed right after ``PROG: interrupted``, so it starts with its own separator:
    ``Interrupted(" after 12 frames; the output so far is saved in out.mp4")``.
    """


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


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
    exit 2; Ctrl-C -> ``PROG: interrupted<what was kept>``, exit 130, where ``interrupted`` is the default
    account of what a run leaves behind and a command that knows better raises Interrupted(account).
    ``--help`` and ``--version`` work as usual. Set SCASEG_DEBUG=1 to see the traceback instead.
    """
    name = prog or os.path.basename(sys.argv[0]) or "scaseg"
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 (surrogates) prints as \udcff, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = _invoke(app, name)
    except ScasegError as exc:
        if os.environ.get("SCASEG_DEBUG"):
            raise
        print(f"{name}: error: {_one_line(str(exc))}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except (KeyboardInterrupt, Interrupted) as exc:
        what = str(exc) if isinstance(exc, Interrupted) and str(exc) else interrupted
        print(f"{name}: interrupted{_one_line(what) if what[:1] in ',;:' else ' ' + _one_line(what)}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        from scaseg.progress import set_quiet

        set_quiet(False)  # -q is this command's; code that runs after it in the same process shows progress again
    sys.exit(code)  # as click's standalone mode does, also on success


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
