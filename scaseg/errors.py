"""User-facing errors and the command-line wrapper that turns them into one sentence and an exit code."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable


class ScasegError(Exception):
    """A problem the user can fix (bad path, wrong checkpoint, empty folder...).

    The message is one sentence that says what was expected. Commands print it
    without a traceback and exit with code 2.
    """


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def run_cli(app: Callable[..., object], prog: str | None = None) -> None:
    """Run a Typer app (or any callable): ScasegError -> one line on stderr, exit 2; Ctrl-C -> exit 130.

    Set SCASEG_DEBUG=1 to see the traceback instead.
    """
    name = prog or os.path.basename(sys.argv[0]) or "scaseg"
    try:
        app()
    except ScasegError as exc:
        if os.environ.get("SCASEG_DEBUG"):
            raise
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        from scaseg.progress import set_quiet

        set_quiet(False)  # -q is this command's; code that runs after it in the same process shows progress again


def version_option(prog: str) -> Any:
    """A ``--version`` option for a Typer command: prints ``PROG VERSION`` and exits 0."""
    import typer

    def show(value: bool) -> None:
        if value:
            from scaseg import __version__

            typer.echo(f"{prog} {__version__}")
            raise typer.Exit()

    return typer.Option(False, "--version", callback=show, is_eager=True, help="Print the version and exit.")
