"""scaseg-infer on bad input, as a user would meet it: each case a subprocess, one sentence, nothing lost."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from badinput import interrupt, on_full_disk, one_line, refused, run, tree
from runtime_models import halves, make_onnx, make_video

PROG = "scaseg-infer"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("infer")
    make_onnx(root / "m.onnx", size=None)
    make_video(root / "src.mp4", frames=8, size=(48, 64))
    make_video(root / "long.mp4", frames=400, size=(64, 96))
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(root / "noisy.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 10, (96, 64))
    for _ in range(60):  # noise does not compress: each frame costs kilobytes
        writer.write(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    writer.release()
    pics = root / "images"
    pics.mkdir()
    for i in range(3):
        cv2.imwrite(str(pics / f"{i}.png"), cv2.cvtColor(halves(40, 56), cv2.COLOR_RGB2BGR))
    return root


@pytest.mark.parametrize("case", ["same", "same_spelled_differently", "symlink"])
def test_an_output_that_is_the_input_is_refused(work: Path, case: str) -> None:
    if case == "symlink" and not (work / "link.mp4").exists():
        os.symlink(work / "src.mp4", work / "link.mp4")
    out = {"same": "src.mp4", "same_spelled_differently": "./images/../src.mp4", "symlink": "link.mp4"}[case]
    line = refused(PROG, ["src.mp4", "-m", "m.onnx", "-o", out, "-q"], work, expect="is the input")
    assert "src.mp4" in line


def test_a_folder_of_the_users_is_never_replaced(work: Path) -> None:
    mine = work / "p"
    mine.mkdir(exist_ok=True)
    (mine / "mine.txt").write_text("keep me")
    refused(PROG, ["images", "-m", "m.onnx", "-o", "p", "-q"], work, expect="not empty")
    assert (mine / "mine.txt").read_text() == "keep me"


def test_its_own_folder_output_is_replaced_on_a_rerun(work: Path) -> None:
    for _ in range(2):
        proc = run(PROG, ["images", "-m", "m.onnx", "-o", "seg", "-q"], work)
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (work / "seg").iterdir()) == ["0.png", "1.png", "2.png", "scaseg-infer.json"]


@pytest.mark.parametrize("source,out", [("src.mp4", "/proc/o.mp4"), ("images", "/proc/p"), ("src.mp4", "/proc/x/y/o.mp4")])
def test_an_output_location_that_cannot_be_written_is_refused_before_work(work: Path, source: str, out: str) -> None:
    refused(PROG, [source, "-m", "m.onnx", "-o", out, "-q"], work, expect="cannot write")


@pytest.mark.parametrize("args,expect", [
    (["src.mp4", "-m", "m.onnx", "--queue", "0"], "--queue"),
    (["src.mp4", "-m", "m.onnx", "--alpha", "x"], "--alpha"),
    (["src.mp4", "-m", "m.onnx", "-o", "new/dir/out.txt"], "needs a .mp4"),
    (["src.mp4", "-m", "m.onnx", "--streams", "0"], "--streams must be from 1 to"),
    (["src.mp4", "-m", "m.onnx", "--streams", "two"], "--streams must be auto or a whole number of streams"),
    (["src.mp4", "-m", "m.onnx", "--streams", "3", "--threads", "2"], "--streams must be from 1 to 2 (--threads 2"),
    (["src.mp4", "-m", "m.onnx", "--streams", "2", "--threads", "2", "--backend", "openvino"], "openvino backend, one call"),
    (["src.mp4", "--server", "http://localhost:1", "--streams", "2"], "--streams cannot be combined with --server"),
    (["src.mp4", "--server", "http://localhost:1", "--streams", "1"], "cannot reach the Triton server"),  # 1 is fine
])
def test_usage_errors_are_one_line(work: Path, args: list[str], expect: str) -> None:
    refused(PROG, args, work, expect=expect)
    assert not (work / "new").exists()


def test_a_video_on_a_full_disk_fails_and_leaves_nothing(work: Path) -> None:
    before = tree(work)
    proc, held = on_full_disk(PROG, ["noisy.mp4", "-m", "m.onnx", "-o", "full/out.mp4", "-q"], work, work / "full", "64k")
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in one_line(proc, PROG)
    assert held == [], f"left on the full disk: {held}"
    assert set(tree(work)) - set(before) <= {"full"}


def test_an_image_folder_on_a_full_disk_fails_and_leaves_nothing(work: Path) -> None:
    pics = work / "many"
    if not pics.exists():
        pics.mkdir()
        rng = np.random.default_rng(0)
        for i in range(12):  # noise does not compress: each PNG is about 60 kB
            cv2.imwrite(str(pics / f"{i:02d}.png"), rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    proc, held = on_full_disk(PROG, ["many", "-m", "m.onnx", "-o", "full2/seg", "-q"], work, work / "full2", "256k")
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in one_line(proc, PROG)
    assert held == [], f"left on the full disk: {held}"


def test_ctrl_c_keeps_a_playable_video_and_says_so(work: Path) -> None:
    def writing() -> bool:
        return any(p.stat().st_size for p in work.glob(".long_seg.mp4.*"))

    done, line = interrupt(PROG, ["long.mp4", "-m", "m.onnx", "-q"], work, writing, settle=0.05)
    assert "saved in" in line and "long_seg.mp4" in line
    cap = cv2.VideoCapture(str(work / "long_seg.mp4"))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert 0 < frames < 400
    assert not list(work.glob(".long_seg*"))
