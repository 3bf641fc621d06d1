"""scaseg-synth on bad input: each case a subprocess, one sentence, exit 2, nothing written, nobody's files deleted."""
from __future__ import annotations

from pathlib import Path

import pytest

from badinput import interrupt, on_full_disk, one_line, refused, run, tree

PROG = "scaseg-synth"
SMALL = ["--num", "2", "--size", "32", "--video-frames", "0", "-q"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("keep me")
    (root / "afile").write_text("not a folder")
    return root


@pytest.mark.parametrize("args,expect", [
    (["mine", *SMALL], "not empty"),
    (["afile", *SMALL], "not a folder"),
    (["/proc/s", *SMALL], "cannot write"),
    (["/proc/x/y/s", *SMALL], "cannot write"),
    (["out", "--num", "0", "-q"], "at least 1"),
    (["out", "--size", "8", "-q"], "between"),
    (["out", "--num", "x"], "--num"),
    (["out", "--size", "32y"], "--size"),
    ([], "needs an output folder"),
])
def test_bad_input_is_one_sentence_and_changes_nothing(work: Path, args: list[str], expect: str) -> None:
    refused(PROG, args, work, expect=expect)
    assert (work / "mine" / "notes.txt").read_text() == "keep me"
    assert not (work / "out").exists()


def test_a_previous_dataset_is_replaced_on_a_rerun(work: Path) -> None:
    for _ in range(2):
        proc = run(PROG, ["ds", *SMALL], work)
        assert proc.returncode == 0, proc.stderr
    assert (work / "ds" / "synth.json").is_file()


def test_a_full_disk_fails_in_one_sentence_and_leaves_nothing(work: Path) -> None:
    before = tree(work)
    proc, held = on_full_disk(PROG, ["full/ds", "--num", "20", "--size", "128x256", "--video-frames", "4", "-q"],
                              work, work / "full", "200k")
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in one_line(proc, PROG)
    assert held == [], f"left on the full disk: {held}"
    assert set(tree(work)) - set(before) <= {"full"}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_says_nothing_was_written(work: Path, workers: str) -> None:
    before = tree(work)

    def writing() -> bool:
        return any(work.glob(".big.*"))

    done, line = interrupt(PROG, ["big", "--num", "400", "--size", "128x256", "-q", "--workers", workers], work,
                           writing, settle=0.2)
    assert "nothing was written" in line
    assert tree(work) == before
