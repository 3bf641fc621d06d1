"""What every scaseg-* command shares: one way to build the app, one size syntax, -o/--output and -q/--quiet.

The conventions (README, "The commands"):
- ``-o/--output`` is where the command writes; ``-q/--quiet`` drops progress; ``-h/--help`` and ``--version``.
- A size (``--imgsz``, ``--crop``, ``--val-size``, ``--size``) is ``N`` (square) or ``HxW``: :func:`parse_size`;
  a network input size (``--imgsz`` of scaseg-export, scaseg-infer and scaseg-bench) is at least ``MIN_IMGSZ``.
- ``--help`` lists every option with its default, flags as flags and choices as ``a|b|c``.
"""
from __future__ import annotations

from typing import Any, Optional

from scaseg.errors import ScasegError

SIZE_METAVAR = "N|HxW"
SIZE_SYNTAX = "N (square) or HxW in pixels, e.g. 512 or 512x1024"
# Below one stride-32 cell SCASeg's last encoder stage has nothing to pool; from 32 up any H, W works (ceil pooling,
# no multiple-of-32 rule). One minimum for every command that sets a network input size.
MIN_IMGSZ = 32


def make_app(help: Optional[str]) -> Any:
    """A Typer app with the shared help layout: plain text, defaults shown, ``-h`` beside ``--help``."""
    import typer

    # Plain click help: typer's rich layout prints "<bool>" after flags and "<str>" after every value.
    return typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, help=help,
                       context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})


def parse_size(text: Optional[str], option: str = "--imgsz", minimum: int = 1) -> Optional[tuple[int, int]]:
    """``"512"`` -> (512, 512); ``"512x1024"`` (H x W) -> (512, 1024); None or "" -> None.

    The one parser of sizes typed on a command line; ``minimum`` is the smallest side accepted.
    """
    if text is None or str(text).strip() == "":
        return None
    parts = str(text).strip().lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise ScasegError(f"{option} {text!r} is not a size: expected {SIZE_SYNTAX}")
    if min(dims) < minimum:
        raise ScasegError(f"{option} {text!r} is too small: at least {minimum} pixels per side")
    return dims[0], dims[1]


def parse_imgsz(text: Optional[str], option: str = "--imgsz") -> Optional[tuple[int, int]]:
    """A network input size: :func:`parse_size` with SCASeg's smallest side, for export, infer and bench alike."""
    return parse_size(text, option, minimum=MIN_IMGSZ)


def size_type(text: str) -> tuple[int, int]:
    """:func:`parse_size` as an argparse ``type=`` (the benchmarks/ scripts): a bad size is argparse's usage error."""
    import argparse

    try:
        size = parse_size(text)
    except ScasegError:
        size = None
    if size is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: expected {SIZE_SYNTAX}")
    return size


def format_size(size: Optional[tuple[int, int]]) -> Optional[str]:
    """(512, 1024) -> "512x1024": the text :func:`parse_size` reads back."""
    return None if size is None else f"{size[0]}x{size[1]}"


def quiet_option() -> Any:
    """``-q/--quiet``: no progress output (results and warnings still print), for every display of the process."""
    import typer

    from scaseg.progress import set_quiet

    def apply(value: bool) -> bool:
        set_quiet(value)
        return value

    return typer.Option(False, "-q", "--quiet", callback=apply,
                        help="No progress output (results, warnings and errors still print).")
