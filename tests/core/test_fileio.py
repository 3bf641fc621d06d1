"""scaseg.fileio: atomic outputs leave nothing behind on failure and get normal permissions."""
from __future__ import annotations

import os

import pytest

from scaseg.errors import ScasegError
from scaseg.fileio import atomic_dir, atomic_path


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.onnx"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            assert tmp.suffix.endswith(".onnx")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"whole")
    assert dest.read_bytes() == b"whole" and len(list(tmp_path.iterdir())) == 1


def test_atomic_dir_replaces_only_its_own_folders(tmp_path):
    dest = tmp_path / "repo"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    ours = lambda p: (p / "old.txt").is_file()  # noqa: E731 - the marker a previous output carries
    with atomic_dir(dest, owned=ours) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    # A non-empty folder that is not a previous output is refused before the body runs: nothing deleted.
    with pytest.raises(ScasegError, match="not empty"):
        with atomic_dir(dest, owned=ours):
            raise AssertionError("the body must not run")
    assert (dest / "new.txt").read_text() == "new"


def test_atomic_outputs_get_normal_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
