"""Safe output: check where a command will write before it works, write to a temporary name, check, rename.

The contract every command keeps (README, "bad input"): an output location is checked before the work starts
(``check_output``), an output never replaces one of the command's inputs (``refuse_overwrite``), a failed or
interrupted write leaves neither a half-written file nor the folders it created (``atomic_path``/``atomic_dir``), and
a folder is replaced only when it is empty or a previous output of the same command (never a user's files).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

from scaseg.errors import ScasegError

PathLike = Union[str, "os.PathLike[str]"]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def write_error(dest: PathLike, exc: BaseException) -> ScasegError:
    """The one sentence for a write that failed (disk full, read-only file system, quota...)."""
    return ScasegError(f"cannot write {dest}: {_reason(exc)}; nothing was written")


def _existing_ancestor(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable_dir(path: PathLike) -> Path:
    """Check, before any work, that ``path`` (a file or folder to be written) can be created; returns its parent.

    Nothing is created: folders appear when the output is written. The check writes and removes a probe file in
    the nearest existing folder, because os.access says yes where a write fails (root on /proc, read-only mounts).
    """
    parent = Path(path).expanduser().absolute().parent
    base = _existing_ancestor(parent)
    if not base.is_dir():
        raise ScasegError(f"cannot create the output folder {parent}: {base} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".scaseg-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = parent if base == parent else f"{parent} (in {base})"
        raise ScasegError(f"cannot write to the output folder {where}: {_reason(exc)}") from None
    return parent


def check_output(path: PathLike, *, folder: bool = False) -> Path:
    """check_writable_dir, and refuse an existing output of the wrong kind (a folder where a file goes, or the reverse)."""
    p = Path(path).expanduser()
    if folder and p.exists() and not p.is_dir():
        raise ScasegError(f"the output {p} exists and is not a folder")
    if not folder and p.is_dir():
        raise ScasegError(f"the output {p} is a folder; name a file in it instead")
    if not folder and p.exists() and not p.is_file():
        raise ScasegError(f"the output {p} exists and is not a regular file")
    check_writable_dir(p)
    return p


def same_path(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file or folder (links and relative paths resolved)."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if os.path.realpath(pa) == os.path.realpath(pb):
        return True
    try:
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:
        return False


def _contains(folder: PathLike, path: PathLike) -> bool:
    f, p = os.path.realpath(Path(folder).expanduser()), os.path.realpath(Path(path).expanduser())
    return p.startswith(f.rstrip(os.sep) + os.sep)


def refuse_overwrite(outputs: Iterable[Optional[PathLike]], inputs: Iterable[Optional[PathLike]]) -> None:
    """Refuse, in one sentence, an output that is one of the inputs or a folder (to be replaced) holding one."""
    ins = [i for i in inputs if i is not None and str(i) != ""]
    for out in outputs:
        if out is None or str(out) == "":
            continue
        for inp in ins:
            if same_path(out, inp):
                raise ScasegError(f"the output {out} is the input {inp}: writing it would destroy the input; "
                                  "choose another output")
            if Path(out).expanduser().is_dir() and _contains(out, inp):
                raise ScasegError(f"the output folder {out} holds the input {inp}: replacing it would destroy the "
                                  "input; choose another output")


def temp_token() -> str:
    """``<pid>-<host hash>`` in every temporary name, so that a later run can tell a dead writer's leftovers."""
    return f"{os.getpid()}-{zlib.crc32(socket.gethostname().encode()) & 0xFFFF:04x}"


_TOKEN = re.compile(r"[.-](\d+)-([0-9a-f]{4})\.")
STALE_FOREIGN_S = 24 * 3600  # a temporary of another host (shared file system) is only removed after this


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder: PathLike, prefix: str) -> list[Path]:
    """Remove temporaries named ``<prefix>...<pid>-<host>...`` in ``folder`` whose writer is gone; returns them.

    Only names of our own making (``prefix`` + the token of temp_token) are touched: on this host when that process
    no longer runs, from another host when older than a day.
    """
    base = Path(folder).expanduser()
    removed: list[Path] = []
    if not base.is_dir():
        return removed
    here = temp_token().split("-")[1]
    for entry in base.iterdir():
        if not entry.name.startswith(prefix):
            continue
        m = _TOKEN.search(entry.name[len(prefix) - 1:])
        if m is None:
            continue
        pid, host = int(m.group(1)), m.group(2)
        try:
            age = time.time() - entry.lstat().st_mtime
        except OSError:
            continue
        if (host == here and not _pid_alive(pid)) or (host != here and age > STALE_FOREIGN_S):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            removed.append(entry)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def created_folders(parent: Path) -> Iterator[None]:
    """Create ``parent`` (and missing folders above it); on failure remove the ones this call created."""
    missing = []
    p = parent
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(missing)
        raise ScasegError(f"cannot create the output folder {parent}: {_reason(exc)}") from None
    try:
        yield
    except BaseException:
        _remove_empty(missing)
        raise


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


def _fsync(path: Path) -> None:
    # Delayed allocation can report a full disk only at flush time: flush before the rename makes it visible here.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: PathLike) -> Iterator[Path]:
    """Yield a temporary path with the same suffix as ``dest`` in its folder; rename it to ``dest`` on success.

    The suffix is kept because some writers choose the format from it (OpenCV's VideoWriter, onnx.save).
    On any exception, including Ctrl-C, the temporary file and the folders created for it are removed and
    ``dest`` is left untouched. An OSError in the body (disk full...) becomes one sentence; so does a body that
    leaves no file behind (a writer that failed without saying so).
    """
    dest = Path(dest).expanduser()
    parent = check_writable_dir(dest)
    remove_stale(parent, f".{dest.name}.")
    with created_folders(parent):
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{temp_token()}.", suffix=f".tmp{''.join(dest.suffixes[-1:])}",
                                       dir=parent)
        except OSError as exc:
            raise write_error(dest, exc) from None
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            try:
                yield tmp_path
                if not tmp_path.is_file():
                    raise ScasegError(f"cannot write {dest}: the writer left no file; nothing was written")
                _fsync(tmp_path)
                # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
                os.chmod(tmp_path, 0o666 & ~_umask())
                os.replace(tmp_path, dest)
            except OSError as exc:
                raise write_error(dest, exc) from None
        except BaseException:
            with contextlib.suppress(OSError):
                tmp_path.unlink()
            raise


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and next(path.iterdir(), None) is None


@contextlib.contextmanager
def atomic_dir(dest: PathLike, *, owned: Optional[Callable[[Path], bool]] = None, what: str = "") -> Iterator[Path]:
    """Like atomic_path for a folder: build it under a temporary name, then swap it into place.

    An existing ``dest`` is replaced only when it is empty or ``owned(dest)`` says it is a previous output of the
    same command; any other folder is refused (in one sentence, before the work), so a user's files are never
    deleted. ``what`` names the command's kind of output in that sentence ("scaseg-synth dataset").
    """
    dest = Path(dest).expanduser()
    check_dir_output(dest, owned=owned, what=what)
    parent = check_writable_dir(dest)
    remove_stale(parent, f".{dest.name}.")
    with created_folders(parent):
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{temp_token()}.", suffix=".tmp", dir=parent))
        except OSError as exc:
            raise write_error(dest, exc) from None
        try:
            try:
                yield tmp
                os.chmod(tmp, 0o777 & ~_umask())
                if dest.exists():
                    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{temp_token()}.", suffix=".old", dir=parent))
                    os.replace(dest, old / dest.name)
                    os.replace(tmp, dest)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, dest)
            except OSError as exc:
                raise write_error(dest, exc) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def check_dir_output(dest: PathLike, *, owned: Optional[Callable[[Path], bool]] = None, what: str = "") -> Path:
    """Refuse a folder output that exists as a file, or as a non-empty folder that is not a previous output of ours."""
    p = Path(dest).expanduser()
    if p.exists() and not p.is_dir():
        raise ScasegError(f"the output {p} exists and is not a folder")
    if p.is_dir() and not is_empty_dir(p) and not (owned is not None and owned(p)):
        kind = f"a {what}" if what else "an output of this command"
        raise ScasegError(f"the output folder {p} is not empty and is not {kind}; choose a new or empty folder "
                          "(files this command did not write are never deleted)")
    check_writable_dir(p)
    return p


def write_bytes(path: PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` (creating its folder) and check that it all went; one sentence on failure."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise write_error(p, exc) from None
    if p.stat().st_size != len(data):
        raise ScasegError(f"cannot write {p}: only {p.stat().st_size} of {len(data)} bytes arrived; nothing was written")
