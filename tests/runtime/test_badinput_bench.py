"""scaseg-bench on bad input: outputs checked before the benchmark, never an input overwritten, one sentence."""
from __future__ import annotations

from pathlib import Path

import pytest

from badinput import on_full_disk, one_line, refused, run, tree
from runtime_models import make_onnx

PROG = "scaseg-bench"
FAST = ["--warmup", "0", "-n", "1", "-q"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    make_onnx(root / "m.onnx", size=(32, 48))
    (root / "somedir").mkdir()
    (root / "somedir.json").mkdir()
    (root / "data.json").mkdir()
    return root


@pytest.mark.parametrize("args,expect", [
    (["m.onnx", "-o", "m.onnx"], "expected a .json or .csv"),
    (["m.onnx", "-o", "r.json", "-o", "./somedir/../r.json"], "given twice"),
    (["m.onnx", "-o", "somedir.json"], "is a folder"),
    (["m.onnx", "-o", "/proc/r.json"], "cannot write"),
    (["m.onnx", "-o", "/proc/r.csv"], "cannot write"),
    (["m.onnx", "-o", "/proc/x/y/r.json"], "cannot write"),
    (["m.onnx", "--data", "data.json", "-o", "data.json"], "is the input"),
    (["-n", "0", "m.onnx"], "--runs"),
    (["m.onnx", "--batch", "x"], "--batch"),
    (["nope.onnx"], "not found"),
    (["m.onnx", "--threads", "0"], "--threads must be auto or at least 1"),
    (["m.onnx", "--threads", "many"], "--threads must be auto or a whole number"),
])
def test_bad_input_is_refused_before_the_benchmark(work: Path, args: list[str], expect: str) -> None:
    refused(PROG, [*args, *FAST] if args and args[0] != "-n" else args, work, expect=expect)


def test_a_full_disk_fails_in_one_sentence_and_leaves_nothing(work: Path) -> None:
    before = tree(work)
    proc, held = on_full_disk(PROG, ["m.onnx", *FAST, "-o", "full/r.json"], work, work / "full", "64k", full=True)
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in one_line(proc, PROG)
    assert held == [], f"left on the full disk: {held}"
    assert set(tree(work)) - set(before) <= {"full"}


def test_good_outputs_are_written(work: Path) -> None:
    proc = run(PROG, ["m.onnx", *FAST, "-o", "new/r.json", "-o", "new/r.csv"], work)
    assert proc.returncode == 0, proc.stderr
    assert (work / "new" / "r.json").stat().st_size and (work / "new" / "r.csv").stat().st_size
