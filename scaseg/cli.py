"""What every scaseg-* command shares: one way to build the app, one size syntax, -o/--output and -q/--quiet, and
what a typed path may be.

The conventions (README, "The commands"):
- ``-o/--output`` is where the command writes; ``-q/--quiet`` drops progress; ``-h/--help`` and ``--version``.
- A size (``--imgsz``, ``--crop``, ``--val-size``, ``--size``) is ``N`` (square) or ``HxW``: :func:`parse_size`;
  a network input size (``--imgsz`` of scaseg-export, scaseg-infer and scaseg-bench) is at least ``MIN_IMGSZ``.
- ``--help`` lists every option with its default, flags as flags and choices as ``a|b|c``.
- A flag name means one thing across the five commands; a renamed flag stays for one release as a hidden
  :func:`renamed_option` that refuses in one line naming the new flag. ``auto`` or a count: :func:`parse_auto_or_count`.
- File names that are not valid UTF-8 (a byte such as 0xFF, as a Latin-1 system names files): Python holds them as
  text with surrogates, which C++ libraries cannot take (OpenCV crashed on them). OpenCV gets them through
  ``scaseg.data.images.native_path``; files ONNX Runtime and TensorRT write or read by name are refused up front
  (:func:`require_utf8`). Messages show such a name with ``\\udcff`` escapes (errors.run_cli's streams). A source or
  input that is a FIFO, a socket or a device (:func:`special_file`) is refused: reading it can block forever.
"""
from __future__ import annotations

import os
import stat
from typing import Any, Optional, Union

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


AUTO = "auto"


def parse_auto_or_count(value: Union[str, int, None], option: str, noun: str, off: tuple[str, ...] = ()
                        ) -> Union[str, int, None]:
    """The one parser of an ``auto|N`` option: None or "auto" -> "auto"; a word of ``off`` -> None; else the whole
    number typed (bounds are the caller's). ``noun`` names what N counts, for the one-sentence refusal."""
    if value is None:
        return AUTO
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    if text in off:
        return None
    try:
        return int(text)
    except ValueError:
        raise ScasegError(f"{option} must be auto{', ' + '/'.join(off) if off else ''} or a whole number of {noun}, "
                          f"got {value!r}") from None


def renamed_option(old: str, new: str) -> Any:
    """A flag renamed in this release, kept one release as a hidden option that stops the command with one line
    (``--format was renamed --output-kind: use --output-kind labels``) instead of "no such option" or another
    command's meaning. The parameter it declares receives nothing (``expose_value=False``)."""
    import typer

    def refuse(value: Optional[str]) -> Optional[str]:
        if value is not None:
            raise ScasegError(f"{old} was renamed {new}: use {new} {value}")
        return value

    return typer.Option(None, old, hidden=True, expose_value=False, callback=refuse)


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


def is_utf8(text: str) -> bool:
    """Whether ``text`` (a path or URL as Python holds it) encodes as UTF-8, i.e. has no surrogate escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def require_utf8(path: Union[str, "os.PathLike[str]"], what: str) -> None:
    """Refuse, before any work, a file name ONNX Runtime or TensorRT would be handed and cannot take."""
    if not is_utf8(os.fspath(path)):
        raise ScasegError(f"file names must be valid UTF-8 (ONNX Runtime and TensorRT take no other): {what} "
                          f"{path} is not")


def require_file(path: Union[str, "os.PathLike[str]"], what: str) -> str:
    """The one check of an input file before it is read: it exists, is a regular file and is readable.

    ``what`` names it in the sentence ("model", "ONNX model"); returns the path as given.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ScasegError(f"{what} not found: {path}")
    if not os.path.isfile(path):
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise ScasegError(f"the {what} path {path} is {special_file(path) or 'a folder'}; expected {article} {what} file")
    if not os.access(path, os.R_OK):
        raise ScasegError(f"the {what} file {path} is not readable")
    return path


def special_file(path: Union[str, "os.PathLike[str]"]) -> Optional[str]:
    """What ``path`` is when it exists and is neither a regular file nor a folder ("a FIFO", "a socket", "a
    device"), else None. Reading such a file can block forever (a FIFO waits for a writer) or never end."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"
