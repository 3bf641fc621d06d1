"""Atomic output: write to a temporary name beside the destination, rename on success, remove on failure."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from scaseg.errors import ScasegError


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create the parent folder of ``path`` if needed and check that it can be written to."""
    parent = Path(path).expanduser().resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScasegError(f"cannot create the output folder {parent}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK):
        raise ScasegError(f"the output folder {parent} is not writable")
    return parent


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path with the same suffix as ``dest`` in its folder; rename it to ``dest`` on success.

    The suffix is kept because some writers choose the format from it (OpenCV's VideoWriter, onnx.save).
    On any exception, including Ctrl-C, the temporary file is removed and ``dest`` is left untouched.
    """
    dest = Path(dest).expanduser()
    parent = check_writable_dir(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{''.join(dest.suffixes[-1:])}", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Like atomic_path for a folder: build it under a temporary name, then swap it into place."""
    dest = Path(dest).expanduser()
    parent = check_writable_dir(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_section(path: str | os.PathLike, name: str, text: str) -> None:
    """Replace what lies between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in a text file, atomically.

    Used to regenerate the README's measured sections from the scripts that measure them.
    """
    path = Path(path).expanduser()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    try:
        old = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScasegError(f"cannot read {path}: {exc.strerror}") from None
    i, j = old.find(start), old.find(end)
    if i < 0 or j < i:
        raise ScasegError(f"{path} has no '{start}' ... '{end}' markers to replace")
    new = old[: i + len(start)] + "\n" + text.strip("\n") + "\n" + old[j:]
    with atomic_path(path) as tmp:
        tmp.write_text(new, encoding="utf-8")
