"""The generated parts of README.md and docs/: the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.

The scripts that measure write their own sections: ``python -m scaseg.stats --readme README.md`` (the variant
table, markers ``variants``) and ``python benchmarks/perf_report.py --readme README.md`` (markers ``perf``).
"""
from __future__ import annotations

import os
from pathlib import Path

from scaseg.errors import ScasegError
from scaseg.fileio import atomic_path


def replace_section(path: str | os.PathLike, name: str, text: str) -> None:
    """Replace what lies between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in a text file, atomically."""
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
