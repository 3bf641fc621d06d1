"""Commands under a memory limit (``prlimit --as``): an allocation that fails is one sentence, ``PROG: error: out of
memory while ...; nothing was written``, exit 2, no traceback, the folder tree unchanged. Each case first runs a
small job under the same limit, which must succeed: the limit leaves room for the command, the input's size is
what fails (in PyTorch, numpy, OpenCV or ONNX Runtime, as the case may be)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

import pytest
import torch

import scaseg
from badinput import command, env, one_line, tree
from runtime_models import make_onnx, make_video

LIMIT = 5 * 2**29  # 2.5 GiB of address space: about 1 GiB more than the largest small job below reaches here

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scaseg.data.synth import write_dataset

    root = tmp_path_factory.mktemp("memory")
    torch.manual_seed(0)
    scaseg.save_checkpoint(scaseg.build("scaseg-b0", 3), root / "ck.pth", input_size=(64, 64))
    make_onnx(root / "m.onnx", size=None, batch=None)
    make_video(root / "src.mp4", frames=3, size=(48, 64))
    write_dataset(root / "data", 4, size=(32, 64), video_frames=0, progress=False)
    return root


def limited(prog: str, args: Sequence[object], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["prlimit", f"--as={LIMIT}", *command(prog, args)], cwd=cwd, capture_output=True, text=True,
                          env=env(), timeout=300)


TRAIN = ["--variant", "scaseg-b0", "--workers", "0", "--val-interval", "0", "--iters", "1", "--threads", "1", "-q",
         "--data", "data"]
BENCH = ["m.onnx", "--warmup", "0", "-n", "1", "-q"]


@pytest.mark.parametrize("prog,small,outputs,large,where", [
    pytest.param("scaseg-export", ["ck.pth", "-o", "ok.onnx", "--no-simplify", "-q"], ["ok.onnx"],
                 ["ck.pth", "-o", "big.onnx", "--no-simplify", "-q", "--imgsz", "2048"],
                 "PyTorch", id="export", marks=pytest.mark.slow),
    pytest.param("scaseg-train", [*TRAIN, "--crop", "32", "--batch", "1", "-o", "ok"], ["ok"],
                 [*TRAIN, "--crop", "1024", "--batch", "4", "-o", "big"],
                 "PyTorch", id="train", marks=pytest.mark.slow),
    pytest.param("scaseg-infer", ["src.mp4", "-m", "m.onnx", "-o", "ok.mp4", "-q"], ["ok.mp4"],
                 # the network's input of an 8192x8192 model: made by OpenCV (the frame's planes resized, split) and
                 # numpy (normalised), whichever allocation the limit stops first
                 ["src.mp4", "-m", "m.onnx", "-o", "big.mp4", "-q", "--imgsz", "8192x8192"], "numpy|OpenCV",
                 id="infer"),
    pytest.param("scaseg-bench", [*BENCH, "--batch", "2", "--imgsz", "64", "-o", "ok.json"], ["ok.json"],
                 [*BENCH, "--batch", "256", "--imgsz", "1024", "-o", "big.json"], "numpy", id="bench-numpy"),
    pytest.param("scaseg-bench", [*BENCH, "--batch", "2", "--imgsz", "64", "-o", "ok.json"], ["ok.json"],
                 [*BENCH, "--batch", "64", "--imgsz", "1024", "-o", "big.json"], "ONNX Runtime", id="bench-onnxruntime"),
])
def test_an_allocation_that_fails_is_one_sentence_and_writes_nothing(work: Path, prog: str, small: list[str],
                                                                     outputs: list[str], large: list[str],
                                                                     where: str) -> None:
    fits = limited(prog, small, work)
    assert fits.returncode == 0, f"the small job does not fit under the limit here: {fits.stderr}"
    for name in outputs:
        path = work / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    before = tree(work)
    proc = limited(prog, large, work)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc, prog)
    assert line.startswith(f"{prog}: error: out of memory while allocating "), line
    assert re.search(f" in ({where}) ", line) and line.endswith("nothing was written" + (
        " (temporary files removed)" if prog == "scaseg-export" else "")), line
    assert tree(work) == before
