"""SIGTERM and SIGHUP stop every command as Ctrl-C does: each case a subprocess stopped mid-work, then one
``interrupted by SIG...`` line, exit 128 + the signal's number, no traceback, no process of the command left
(worker processes, the multiprocessing resource tracker) and no temporary: the folder tree is unchanged apart from
the intended outputs. SIGTERM goes to the command's process (a scheduler's stop); SIGHUP to its whole process group,
as a closing terminal sends it (the workers receive it too)."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import scaseg
from badinput import interrupt, tree
from runtime_models import halves, make_onnx, make_video

STOPS = [pytest.param(signal.SIGTERM, False, id="SIGTERM"), pytest.param(signal.SIGHUP, True, id="SIGHUP-group")]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scaseg.data.synth import write_dataset

    root = tmp_path_factory.mktemp("signals")
    torch.manual_seed(0)
    scaseg.save_checkpoint(scaseg.build("scaseg-b0", 3), root / "ck.pth", input_size=(64, 64))
    make_onnx(root / "m.onnx", size=None)
    make_onnx(root / "fixed.onnx", size=(32, 48))
    make_video(root / "long.mp4", frames=400, size=(64, 96))
    pics = root / "pics"
    pics.mkdir()
    image = cv2.cvtColor(halves(360, 640), cv2.COLOR_RGB2BGR)
    for i in range(120):  # about 40 ms each through the pipeline: seconds of work to stop in the middle of
        cv2.imwrite(str(pics / f"{i:03d}.png"), image)
    write_dataset(root / "data", 4, size=(32, 64), video_frames=0, progress=False)
    return root


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in set(before) | set(after) if before.get(k) != after.get(k)}


def _hidden(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*"))


@pytest.mark.parametrize("sig,group", STOPS)
def test_export_removes_its_work_folder(work: Path, sig: int, group: bool) -> None:
    before = tree(work)

    def working() -> bool:
        return any(work.glob(".scaseg-export-*"))

    done, line = interrupt("scaseg-export", ["ck.pth", "-o", "out.onnx", "--no-simplify", "-q"], work, working,
                           sig=sig, group=group)
    assert line == f"scaseg-export: interrupted by {signal.Signals(sig).name}; nothing was written (temporary files removed)"
    assert tree(work) == before


@pytest.mark.parametrize("sig,group", STOPS)
def test_synth_stops_its_workers_and_removes_its_temporary_folder(work: Path, sig: int, group: bool) -> None:
    before = tree(work)

    def writing() -> bool:
        return any(work.glob(".big.*"))

    done, line = interrupt("scaseg-synth", ["big", "--num", "400", "--size", "128x256", "-q", "-j", "2"], work, writing,
                           settle=0.5, sig=sig, group=group)  # settle: both workers are rendering
    assert line == f"scaseg-synth: interrupted by {signal.Signals(sig).name}; nothing was written"
    assert tree(work) == before


def test_infer_keeps_the_video_so_far_and_no_temporary(work: Path) -> None:
    before = tree(work)

    def writing() -> bool:
        return any(p.stat().st_size for p in work.glob(".long_seg.mp4.*"))

    done, line = interrupt("scaseg-infer", ["long.mp4", "-m", "m.onnx", "-q"], work, writing, settle=0.05,
                           sig=signal.SIGTERM)
    assert line.startswith("scaseg-infer: interrupted by SIGTERM after ") and "saved in" in line
    cap = cv2.VideoCapture(str(work / "long_seg.mp4"))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert 0 < frames < 400
    assert _changed(before, tree(work)) == {"long_seg.mp4"}
    (work / "long_seg.mp4").unlink()


def test_infer_keeps_the_image_folder_so_far_and_no_temporary(work: Path) -> None:
    before = tree(work)

    def writing() -> bool:
        return any(len(list(p.glob("*.png"))) >= 3 for p in work.glob(".segs.*"))

    done, line = interrupt("scaseg-infer", ["pics", "-m", "m.onnx", "-o", "segs", "-q"], work, writing,
                           sig=signal.SIGHUP, group=True)
    assert line.startswith("scaseg-infer: interrupted by SIGHUP after ") and "saved in" in line
    written = sorted(p.name for p in (work / "segs").glob("*.png"))
    assert 0 < len(written) < 120
    assert {k.split("/")[0] for k in _changed(before, tree(work))} == {"segs"}
    assert not _hidden(work)
    shutil.rmtree(work / "segs")


@pytest.mark.parametrize("sig,group,workers", [pytest.param(signal.SIGTERM, False, "0", id="SIGTERM"),
                                               pytest.param(signal.SIGHUP, True, "1", id="SIGHUP-group-loader-worker")])
def test_train_says_which_checkpoint_was_kept(work: Path, sig: int, group: bool, workers: str) -> None:
    before = tree(work)
    run_dir = work / "run"

    def saved() -> bool:
        return (run_dir / "last.pth").is_file()

    args = ["--variant", "scaseg-b0", "--crop", "32", "--batch", "1", "--workers", workers, "--val-interval", "0", "-q",
            "--iters", "100000", "--ckpt-interval", "1", "--threads", "1", "--data", "data", "-o", "run"]
    done, line = interrupt("scaseg-train", args, work, saved, settle=0.3, sig=sig, group=group)
    assert line.startswith(f"scaseg-train: interrupted by {signal.Signals(sig).name} at iteration ")
    assert "kept" in line and "last.pth" in line and "--resume" in line
    assert {k.split("/")[0] for k in _changed(before, tree(work))} == {"run"}
    assert not _hidden(work)
    assert {"last.pth", "train_state.pt"} <= {p.name for p in run_dir.iterdir()}
    shutil.rmtree(run_dir)


def _benchmarking(work: Path) -> bool:
    """A scaseg-bench process of this folder has loaded ONNX Runtime: the benchmark is running."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") != str(work):
                continue
            if b"scaseg-bench" in Path(f"/proc/{entry}/cmdline").read_bytes() and \
                    "onnxruntime_pybind11_state" in Path(f"/proc/{entry}/maps").read_text():
                return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize("sig,group", STOPS)
def test_bench_writes_nothing(work: Path, sig: int, group: bool) -> None:
    before = tree(work)
    args = ["fixed.onnx", "--warmup", "0", "-n", "100000000", "-q", "-o", "r.json", "-o", "r.csv"]
    done, line = interrupt("scaseg-bench", args, work, lambda: _benchmarking(work), settle=0.3, sig=sig, group=group)
    assert line == f"scaseg-bench: interrupted by {signal.Signals(sig).name}; nothing was written"
    assert tree(work) == before
