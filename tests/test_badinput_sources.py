"""What may be a source, and the edges of --threads, --imgsz and --tolerance, through the commands.

A FIFO named as a video blocked scaseg-infer forever; ``--threads 10000`` never finished; a camera index of 23
digits or a Unicode digit ended in a traceback; infer and bench took a 1x1 input that export refuses; ``--tolerance
nan`` was refused only after the whole export. Each case is refused in one sentence (exit 2, nothing written) or,
where the value is good, works; a hang fails the test through its timeout.
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import scaseg
from badinput import refused, run, tree
from runtime_models import halves, make_onnx, make_video

INFER, BENCH, TRAIN, EXPORT = "scaseg-infer", "scaseg-bench", "scaseg-train", "scaseg-export"
QUICK = 60  # seconds: every refusal here comes before any work
# The documented bound of an explicit thread count: 4 per logical CPU (docs/runtime.md).
MAX_THREADS = 4 * max(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, os.cpu_count() or 1)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    make_onnx(root / "m.onnx", size=None)
    make_video(root / "src.mp4", frames=4, size=(48, 64))
    os.mkfifo(root / "pipe.mp4")
    os.mkfifo(root / "pipe.png")
    with socket.socket(socket.AF_UNIX) as sock:  # the socket file stays after the socket is closed
        sock.bind(str(root / "sock.mp4"))
    os.symlink(root / "pipe.mp4", root / "link.mp4")
    pics = root / "images"
    pics.mkdir()
    for i in range(2):
        cv2.imwrite(str(pics / f"{i}.png"), cv2.cvtColor(halves(40, 56), cv2.COLOR_RGB2BGR))
    os.mkfifo(pics / "2.png")
    calib = root / "calib"
    calib.mkdir()
    for i in range(7):
        cv2.imwrite(str(calib / f"{i}.png"), np.full((32, 32, 3), 30 * i, np.uint8))
    os.mkfifo(calib / "7.png")
    torch.manual_seed(0)
    scaseg.save_checkpoint(scaseg.build("scaseg-b0", 3), root / "ck.pth", input_size=(64, 64))
    return root


@pytest.mark.parametrize("source,what", [
    ("pipe.mp4", "a FIFO"), ("pipe.png", "a FIFO"), ("link.mp4", "a FIFO"), ("sock.mp4", "a socket"),
    ("/dev/null", "a device"), ("/dev/zero", "a device"),
])
def test_a_special_file_as_the_source_is_refused_at_once(work: Path, source: str, what: str) -> None:
    line = refused(INFER, [source, "-m", "m.onnx", "-o", "out.mp4", "-q"], work, expect="not a file", timeout=QUICK)
    assert what in line and source in line, line


def test_a_special_file_in_an_image_folder_is_skipped_with_a_warning(work: Path) -> None:
    proc = run(INFER, ["images", "-m", "m.onnx", "-o", "seg", "-q"], work, timeout=QUICK)
    assert proc.returncode == 0, proc.stderr
    assert "warning: skipped 1" in proc.stderr and ": 2" in proc.stderr, proc.stderr
    assert sorted(os.listdir(work / "seg")) == ["0.png", "1.png", "scaseg-infer.json"]
    shutil.rmtree(work / "seg")


def test_a_special_file_in_a_calibration_folder_is_refused_at_once(work: Path) -> None:
    refused(EXPORT, ["ck.pth", "--precision", "int8", "--calib", "calib", "-o", "q.onnx", "-q"], work,
            expect="(7.png)", timeout=QUICK)


@pytest.mark.parametrize("source", ["12345678901234567890123", "²", "٣", "00000", "+1", "0x1"])
def test_only_ascii_digits_of_a_sane_length_are_a_camera_index(work: Path, source: str) -> None:
    line = refused(INFER, [source, "-m", "m.onnx", "-o", "out.mp4", "-q"], work, expect="source not found",
                   timeout=QUICK)
    assert source in line


def test_an_ascii_index_is_still_a_camera(work: Path) -> None:
    refused(INFER, ["7", "-m", "m.onnx", "-o", "out.mp4", "-q"], work, expect="cannot open the camera 7", timeout=QUICK)


def test_a_file_named_like_a_unicode_digit_is_a_file(work: Path) -> None:
    shutil.copy(work / "src.mp4", work / "²")
    try:
        refused(INFER, ["²", "-m", "m.onnx", "--output-kind", "labels", "-o", "²", "-q"], work, expect="is the input",
                timeout=QUICK)
        proc = run(INFER, ["²", "-m", "m.onnx", "-q"], work, timeout=QUICK)
        assert proc.returncode == 0, proc.stderr
        cap = cv2.VideoCapture(str(work / "²_seg.mp4"))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
        cap.release()
    finally:
        for leftover in ("²", "²_seg.mp4"):
            (work / leftover).unlink(missing_ok=True)


THREADS_REFUSED = [
    (INFER, "-1", "at least 1"), (INFER, "0", "at least 1"), (INFER, "10000", f"at most {MAX_THREADS}"),
    (INFER, str(MAX_THREADS + 1), f"at most {MAX_THREADS}"),
    (BENCH, "-1", "at least 1"), (BENCH, "10000", f"at most {MAX_THREADS}"),
    (BENCH, str(MAX_THREADS + 1), f"at most {MAX_THREADS}"),
    (TRAIN, "-1", "auto or at least 1"), (TRAIN, "0", "--threads 0 was renamed --threads auto"), (TRAIN, "10000", f"at most {MAX_THREADS}"),
    (TRAIN, str(MAX_THREADS + 1), f"at most {MAX_THREADS}"),
]


@pytest.mark.parametrize("prog,count,expect", THREADS_REFUSED)
def test_thread_counts_out_of_bounds_are_refused_in_one_line(work: Path, prog: str, count: str, expect: str) -> None:
    args = {INFER: ["src.mp4", "-m", "m.onnx", "-o", "out.mp4"], BENCH: ["m.onnx", "--runs", "1", "--warmup", "0"],
            TRAIN: ["--data", "images", "-o", "run", "--iters", "1", "--device", "cpu"]}[prog]
    line = refused(prog, [*args, "--threads", count, "-q"], work, expect=expect, timeout=QUICK)
    assert "--threads" in line


@pytest.mark.parametrize("prog", [INFER, BENCH])
def test_the_largest_thread_count_allowed_runs(work: Path, prog: str) -> None:
    args = {INFER: ["src.mp4", "-m", "m.onnx", "-o", "out.mp4"], BENCH: ["m.onnx", "--runs", "1", "--warmup", "0"]}[prog]
    proc = run(prog, [*args, "--threads", str(MAX_THREADS), "-q"], work, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (work / "out.mp4").unlink(missing_ok=True)


@pytest.mark.parametrize("prog", [INFER, BENCH, EXPORT])
@pytest.mark.parametrize("size", ["1x1", "31x33", "33x31", "16"])
def test_an_input_size_under_32_pixels_is_refused_by_every_command(work: Path, prog: str, size: str) -> None:
    args = {INFER: ["src.mp4", "-m", "m.onnx", "-o", "out.mp4"], BENCH: ["m.onnx", "--runs", "1", "--warmup", "0"],
            EXPORT: ["ck.pth", "-o", "out.onnx"]}[prog]
    line = refused(prog, [*args, "--imgsz", size, "-q"], work, expect="too small", timeout=QUICK)
    assert "at least 32" in line


@pytest.mark.parametrize("size,shape", [("32", (32, 32)), ("33x47", (33, 47))])
def test_a_dynamic_model_runs_at_any_size_from_32(work: Path, size: str, shape: tuple[int, int]) -> None:
    proc = run(BENCH, ["m.onnx", "--runs", "1", "--warmup", "0", "--imgsz", size, "-q"], work, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"1x{shape[0]}x{shape[1]}" in proc.stdout, proc.stdout
    before = tree(work)
    proc = run(INFER, ["src.mp4", "-m", "m.onnx", "-o", "sized.mp4", "--imgsz", size, "-q"], work, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert set(tree(work)) - set(before) == {"sized.mp4"}
    (work / "sized.mp4").unlink()


@pytest.mark.parametrize("tolerance", ["nan", "inf", "-inf", "-0.5"])
def test_a_tolerance_that_is_not_a_finite_non_negative_number_is_refused_before_the_export(
        work: Path, tolerance: str) -> None:
    line = refused(EXPORT, ["ck.pth", "-o", "t.onnx", f"--tolerance={tolerance}", "-q"], work,
                   expect="--tolerance must be a finite number", timeout=QUICK)
    assert tolerance in line


@pytest.mark.parametrize("prog,args", [
    (INFER, ["images", "-m", "pipe.onnx", "-o", "seg"]),
    ("scaseg-bench", ["pipe.onnx", "--runs", "1"]),
])
def test_a_model_path_that_is_a_fifo_is_named_as_one(work: Path, prog: str, args: list[str]) -> None:
    os.mkfifo(work / "pipe.onnx")
    try:
        line = refused(prog, args + ["-q"], work, expect="is a FIFO", timeout=QUICK)
    finally:
        (work / "pipe.onnx").unlink()
    assert "expected a model file" in line, line
