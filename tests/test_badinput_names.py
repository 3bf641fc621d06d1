"""File names that are not valid UTF-8 (a byte such as 0xFF, as a Latin-1 system names files), through the commands.

OpenCV crashed (segmentation fault, a temporary left behind) on such a video name, in or out; every command that
reads or writes a video or an image now takes them, and the outputs ONNX Runtime and TensorRT would be handed by
name are refused in one sentence before any work. Each run prints through a strict UTF-8 stdout (what a
``LANG=en_US.UTF-8`` terminal gives) with a private TMPDIR, so that a name printed or a link left behind shows.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import scaseg
from badinput import command, env, refused, tree
from runtime_models import halves, make_onnx, make_video

FF = os.fsdecode(b"\xff")  # how Python holds the byte 0xFF of a file name: the surrogate U+DCFF
FE = os.fsdecode(b"\xfe")


def name(text: str) -> str:
    """``text`` with ``~`` standing for the byte 0xFF and ``^`` for 0xFE."""
    return text.replace("~", FF).replace("^", FE)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("names")
    make_onnx(root / "m.onnx", size=None)
    make_video(root / "src.mp4", frames=6, size=(48, 64))
    shutil.copy(root / "src.mp4", root / name("v~^.mp4"))
    picture = cv2.cvtColor(halves(40, 56), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(root / "i.png"), picture)
    shutil.copy(root / "i.png", root / name("i~.png"))
    folder = root / name("d~")
    folder.mkdir()
    for each in (name("a~.png"), "b.png"):
        shutil.copy(root / "i.png", folder / each)
    torch.manual_seed(0)
    scaseg.save_checkpoint(scaseg.build("scaseg-b0", 3), root / "ck.pth", input_size=(64, 64))
    shutil.copy(root / "ck.pth", root / name("ck~.pth"))
    shutil.copy(root / "m.onnx", root / name("m~.onnx"))
    calib = root / name("calib~")
    calib.mkdir()
    for i in range(5):  # written by Python: OpenCV's own imwrite crashes on such a folder name
        (calib / name(f"{i}~.png")).write_bytes(cv2.imencode(".png", np.full((32, 32, 3), 40 * i, np.uint8))[1].tobytes())
    return root


def run_strict(prog: str, args: list[str], cwd: Path, tmp: Path) -> subprocess.CompletedProcess:
    """Run with a strict UTF-8 stdout and TMPDIR=tmp (its links must be gone afterwards)."""
    tmp.mkdir(exist_ok=True)
    environ = {**env(), "PYTHONIOENCODING": "utf-8:strict", "TMPDIR": str(tmp)}
    proc = subprocess.run(command(prog, args), cwd=cwd, capture_output=True, text=True, errors="backslashreplace",
                          env=environ, timeout=240)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert not [p for p in os.listdir(tmp) if p.startswith("scaseg-")], os.listdir(tmp)
    return proc


def frames_of(video: Path, tmp: Path) -> list[np.ndarray]:
    """The decoded frames of ``video``, read from an ASCII-named copy (the test's own way round OpenCV)."""
    copy = tmp / "copy.mp4"
    shutil.copyfile(video, copy)
    cap = cv2.VideoCapture(str(copy))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    copy.unlink()
    return frames


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("source,out,written", [
    ("v~^.mp4", None, "v~^_seg.mp4"),  # the input named in bytes that are not UTF-8, the default output beside it
    ("src.mp4", "out~.mp4", "out~.mp4"),  # the output so named
    ("v~^.mp4", "e~/o~.mp4", "e~/o~.mp4"),  # both, in a folder so named that the command creates
])
def test_a_video_named_in_bytes_that_are_not_utf8_is_read_and_written(work: Path, tmp_path: Path, source: str,
                                                                        out: str | None, written: str) -> None:
    reference = work / "ref.mp4"
    if not reference.exists():
        run_strict("scaseg-infer", ["src.mp4", "-m", "m.onnx", "-o", "ref.mp4", "-q"], work, tmp_path / "t0")
    before = tree(work)
    args = [name(source), "-m", "m.onnx", "-q"] + ([] if out is None else ["-o", name(out)])
    proc = run_strict("scaseg-infer", args, work, tmp_path / "t")
    target = work / name(written)
    assert "wrote" in proc.stderr and "\\udcff" in proc.stderr, proc.stderr
    changed = {k for k in set(before) | set(tree(work)) if before.get(k) != tree(work).get(k)}
    assert changed == {name(written)} | ({name("e~")} if "/" in written else set()), changed
    expected = frames_of(reference, tmp_path)
    got = frames_of(target, tmp_path)
    assert len(got) == len(expected) == 6
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    target.unlink()
    if "/" in written:
        target.parent.rmdir()


@pytest.mark.parametrize("source,args,written,files", [
    ("i~.png", [], "i~_seg.png", None),
    ("d~", [], "d~_seg", [name("a~.png"), "b.png", "scaseg-infer.json"]),
    ("v~^.mp4", ["--output-kind", "labels", "-o", name("lab~")], "lab~",
     [f"v{FF}{FE}_{i:06d}.png" for i in range(6)] + ["scaseg-infer.json"]),
])
def test_images_named_in_bytes_that_are_not_utf8_are_read_and_written(work: Path, tmp_path: Path, source: str,
                                                                       args: list[str], written: str,
                                                                       files: list[str] | None) -> None:
    run_strict("scaseg-infer", [name(source), "-m", "m.onnx", "-q", *args], work, tmp_path / "t")
    target = work / name(written)
    if files is None:
        labels = cv2.imdecode(np.fromfile(target, np.uint8), cv2.IMREAD_UNCHANGED)
        reference = cv2.imdecode(np.fromfile(work / "i.png", np.uint8), cv2.IMREAD_UNCHANGED)
        assert labels.shape == reference.shape
        target.unlink()
    else:
        assert sorted(os.listdir(target)) == sorted(files)
        shutil.rmtree(target)


def test_a_dataset_named_in_bytes_that_are_not_utf8_is_the_same_dataset(work: Path, tmp_path: Path) -> None:
    args = ["--num", "4", "--size", "64x128", "--video-frames", "4", "-q"]
    proc = run_strict("scaseg-synth", ["-o", name("s~"), *args], work, tmp_path / "t")
    assert "\\udcff" in proc.stdout, proc.stdout  # printed on a strict UTF-8 stdout, not a crash after the work
    run_strict("scaseg-synth", ["-o", "s_ascii", *args], work, tmp_path / "t")
    ours, theirs = digest(work / name("s~")), digest(work / "s_ascii")
    ours.pop("synth.json")
    theirs.pop("synth.json")
    assert ours == theirs and any(k.endswith(".mp4") for k in ours)
    shutil.rmtree(work / name("s~"))
    shutil.rmtree(work / "s_ascii")


@pytest.mark.parametrize("args,what", [
    (["ck.pth", "-o", "x~.onnx"], "the output"),
    (["ck~.pth"], "the output"),  # the default output is named after the checkpoint
    (["ck.pth", "--format", "triton", "-o", "t~"], "the output"),
    (["m~.onnx", "--format", "engine"], "the ONNX model"),
    (["m.onnx", "--format", "engine", "-o", "m~.engine"], "the output"),
])
def test_export_refuses_names_onnx_runtime_cannot_take_before_any_work(work: Path, args: list[str], what: str) -> None:
    line = refused("scaseg-export", [name(a) for a in args] + ["-q"], work, expect="must be valid UTF-8", timeout=120)
    assert what in line and "\\udcff" in line, line


def test_calibration_images_named_in_bytes_that_are_not_utf8_are_checked_without_a_crash(work: Path) -> None:
    # Five images: the header check of every one runs (it crashed OpenCV), then the count is refused.
    line = refused("scaseg-export", ["ck.pth", "--precision", "int8", "--calib", name("calib~"), "-o", "q.onnx", "-q"],
                   work, expect="holds 5 images", timeout=120)
    assert "\\udcff" in line


@pytest.mark.slow
def test_an_int8_export_calibrated_on_images_named_in_bytes_that_are_not_utf8(work: Path, tmp_path: Path) -> None:
    calib = work / name("calib~")
    (calib / name("5~.png")).write_bytes(cv2.imencode(".png", np.full((32, 32, 3), 220, np.uint8))[1].tobytes())
    proc = subprocess.run(command("scaseg-export", ["ck.pth", "--precision", "int8", "--calib", name("calib~"),
                                                    "-o", "q8.onnx", "-q"]),
                          cwd=work, capture_output=True, text=True, env=env(), timeout=600)
    (calib / name("5~.png")).unlink()
    assert proc.returncode == 0, proc.stderr
    assert (work / "q8.onnx").stat().st_size > 0
    (work / "q8.onnx").unlink()


@pytest.mark.parametrize("prog,args", [
    ("scaseg-infer", ["i.png", "-m", "m~.onnx", "-o", "out.png"]),
    ("scaseg-bench", ["m~.onnx", "--runs", "1"]),
])
def test_a_model_named_in_bytes_that_are_not_utf8_is_refused_by_name(work: Path, prog: str, args: list[str]) -> None:
    # ONNX Runtime's constructor took the name and answered "incompatible constructor arguments".
    line = refused(prog, [name(a) for a in args] + ["-q"], work, expect="must be valid UTF-8", timeout=120)
    assert "the model" in line and "\\udcff" in line, line


def test_a_checkpoint_named_in_bytes_that_are_not_utf8_runs(work: Path, tmp_path: Path) -> None:
    # PyTorch reads the checkpoint through a Python file object: its name is no obstacle.
    out = tmp_path / "out.png"
    proc = subprocess.run(command("scaseg-infer", ["i.png", "-m", name("ck~.pth"), "-o", str(out), "-q"]),
                          cwd=work, capture_output=True, text=True, env=env(), timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert cv2.imread(str(out)) is not None
