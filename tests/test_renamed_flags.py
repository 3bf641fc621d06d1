"""One meaning per flag name across the five commands, and the renamed spellings refused for one release.

scaseg-infer's ``--format`` (overlay|labels) is now ``--output-kind`` (``--format`` is scaseg-export's
onnx|engine|triton); scaseg-synth's ``-n`` is now ``--num`` only (``-n`` is scaseg-bench's ``--runs``);
scaseg-train's ``--warmup`` is now ``--warmup-iters`` (``--warmup`` is scaseg-bench's untimed runs) and its
``--threads`` reads ``auto|N`` as scaseg-bench and scaseg-infer do (``0``, its old auto, is refused). An old
spelling stops the command in one line naming the new one (exit 2, nothing written), wherever it stands.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from badinput import refused, run
from runtime_models import halves, make_onnx

INFER, BENCH, TRAIN, SYNTH, EXPORT = "scaseg-infer", "scaseg-bench", "scaseg-train", "scaseg-synth", "scaseg-export"
COMMANDS = (INFER, BENCH, TRAIN, SYNTH, EXPORT)
QUICK = 60  # seconds: every refusal here comes before any work


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("renamed")
    make_onnx(root / "m.onnx", size=None)
    cv2.imwrite(str(root / "a.png"), halves(24, 32)[..., ::-1])
    (root / "images").mkdir()
    return root


@pytest.mark.parametrize("args,value", [
    (["a.png", "-m", "m.onnx", "--format", "labels", "-q"], "labels"),
    (["--format", "overlay", "a.png", "-m", "m.onnx", "-o", "o.png"], "overlay"),
])
def test_infer_format_is_refused_with_the_new_name(work: Path, args: list[str], value: str) -> None:
    line = refused(INFER, args, work, expect="--format was renamed --output-kind", timeout=QUICK)
    assert f"--output-kind {value}" in line


def test_infer_output_kind_labels_writes_label_ids(work: Path) -> None:
    proc = run(INFER, ["a.png", "-m", "m.onnx", "--output-kind", "labels", "-o", "lab.png", "-q"], work, timeout=120)
    assert proc.returncode == 0, proc.stderr
    labels = cv2.imread(str(work / "lab.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (24, 32) and labels.ndim == 2 and labels.dtype == np.uint8
    (work / "lab.png").unlink()


@pytest.mark.parametrize("count", ["4", "100"])
def test_synth_n_is_refused_with_the_new_name(work: Path, count: str) -> None:
    line = refused(SYNTH, ["out", "-n", count, "--size", "64x128", "--video-frames", "0", "-q"], work,
                   expect="-n was renamed --num", timeout=QUICK)
    assert f"--num {count}" in line and not (work / "out").exists()


TRAIN_ARGS = ["--data", "images", "-o", "run", "--iters", "1", "--device", "cpu", "-q"]


@pytest.mark.parametrize("args,expect", [
    (["--warmup", "50"], "--warmup was renamed --warmup-iters: use --warmup-iters 50"),
    (["--warmup", "0"], "--warmup was renamed --warmup-iters: use --warmup-iters 0"),
    (["--threads", "0"], "--threads 0 was renamed --threads auto"),
    (["--threads", " 0"], "--threads 0 was renamed --threads auto"),
    (["--threads", "many"], "--threads must be auto or a whole number of threads"),
])
def test_train_old_spellings_are_refused_in_one_line(work: Path, args: list[str], expect: str) -> None:
    refused(TRAIN, [*TRAIN_ARGS, *args], work, expect=expect, timeout=QUICK)
    assert not (work / "run").exists()


def _help(prog: str, tmp_path: Path) -> str:
    proc = run(prog, ["--help"], tmp_path, timeout=QUICK)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _flags(text: str) -> dict[str, str]:
    """--help's option lines -> {flag: the rest of its line} (each spelling of a line gets the line)."""
    flags: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"\s+((?:-{1,2}[\w-]+(?:/--[\w-]+)?,? ?)+)(.*)", line)
        if match:
            for flag in re.findall(r"-{1,2}[\w-]+", match.group(1)):
                flags[flag] = match.group(2)
    return flags


def test_one_meaning_per_flag_name_across_the_commands(tmp_path: Path) -> None:
    flags = {prog: _flags(_help(prog, tmp_path)) for prog in COMMANDS}
    assert [p for p in COMMANDS if "--format" in flags[p]] == [EXPORT]
    assert [p for p in COMMANDS if "-n" in flags[p]] == [BENCH]
    assert [p for p in COMMANDS if "--warmup" in flags[p]] == [BENCH]
    assert "--output-kind" in flags[INFER] and "--warmup-iters" in flags[TRAIN] and "--num" in flags[SYNTH]
    with_threads = [p for p in COMMANDS if "--threads" in flags[p]]
    assert set(with_threads) >= {INFER, BENCH, TRAIN}
    for prog in with_threads:
        assert flags[prog]["--threads"].lstrip().startswith("auto|N"), (prog, flags[prog]["--threads"])
