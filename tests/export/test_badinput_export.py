"""scaseg-export on bad input, as a user (or a hostile file) would bring it: each case a subprocess, one sentence,
exit 2, nothing written and nothing left behind."""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import scaseg
from badinput import interrupt, on_full_disk, one_line, refused, tree
from scaseg.fileio import temp_token

PROG = "scaseg-export"


class _System:
    def __reduce__(self):  # a pickle that would run a shell command if it were ever unpickled unsafely
        return (os.system, ("touch pwned",))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = scaseg.build("scaseg-b0", 3)
    scaseg.save_checkpoint(model, root / "ck.pth", input_size=(64, 64))
    state = model.state_dict()
    torch.save({k: v for i, (k, v) in enumerate(state.items()) if not (k.startswith("decode_head.") and i % 2)},
               root / "partial.pth")
    torch.save({**state, "decode_head.extra.weight": torch.zeros(2)}, root / "extra.pth")
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
               root / "nan.pth")
    torch.save(model.backbone.state_dict(), root / "encoder.pth")
    torch.save({"weights": _System()}, root / "evil.pth")
    with open(root / "evil_p2.pth", "wb") as f:
        pickle.dump({"weights": _System()}, f, protocol=2)
    (root / "empty.pth").write_bytes(b"")
    (root / "folder.pth").mkdir()
    (root / "nocalib").mkdir()
    bad = root / "corrupt"
    bad.mkdir()
    for i in range(5):
        (bad / f"{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg " * 4)
    good = root / "calib"
    good.mkdir()
    for i in range(6):
        cv2.imwrite(str(good / f"{i}.png"), np.full((32, 32, 3), 40 * i, np.uint8))
    return root


CASES = {
    # an output that resolves to an input
    "output_is_checkpoint": (["ck.pth", "-o", "ck.pth"], "is the input"),
    "output_is_checkpoint_spelled": (["ck.pth", "-o", "nocalib/../ck.pth"], "is the input"),
    "output_is_calib_folder": (["ck.pth", "--precision", "int8", "--calib", "calib", "-o", "calib"], "folder"),
    # usage errors: one line, not a box
    "batch_0": (["ck.pth", "--batch", "0"], "--batch"),
    "imgsz_keeps_o_an_option": (["ck.pth", "--imgsz", "16", "-o", "out.onnx"], "too small"),
    "calib_method": (["ck.pth", "--precision", "int8", "--calib", "calib", "--calib-method", "kl"], "--calib-method"),
    "int8_target": (["ck.pth", "--precision", "int8", "--calib", "calib", "--int8-target", "gpu"], "--int8-target"),
    "no_checkpoint": ([], "checkpoint"),
    # inputs checked before the export, not after it
    "int8_without_calib": (["ck.pth", "--precision", "int8"], "--calib"),
    "calib_missing": (["ck.pth", "--precision", "int8", "--calib", "nope"], "not found"),
    "calib_empty": (["ck.pth", "--precision", "int8", "--calib", "nocalib"], "holds no images"),
    "calib_corrupt": (["ck.pth", "--precision", "int8", "--calib", "corrupt"], "corrupt"),
    "engine_cpu_target": (["ck.pth", "--precision", "int8", "--calib", "calib", "--format", "engine",
                           "--int8-target", "cpu"], "--int8-target tensorrt"),
    # checkpoints that are not one
    "missing": (["nope.pth"], "not found"),
    "folder": (["folder.pth"], "is a folder"),
    "dev_null": (["/dev/null"], "is a device; expected a checkpoint file"),
    "empty_file": (["empty.pth"], "empty"),
    "pickle_os_system": (["evil.pth"], "python objects"),
    "pickle_protocol_2": (["evil_p2.pth"], "python objects"),
    "partial": (["partial.pth"], "lacks"),
    "unexpected_tensors": (["extra.pth"], "the model has not"),
    "encoder_only": (["encoder.pth"], "only encoder weights"),
    "nan_weights": (["nan.pth"], "nan or infinite"),
    # outputs that cannot be written, and no folder left behind for them
    "proc_output": (["ck.pth", "-o", "/proc/x.onnx"], "cannot write"),
    "bad_checkpoint_new_folders": (["partial.pth", "-o", "newdir/sub/x.onnx"], "lacks"),
    # sizes that cannot fit in memory
    "imgsz_huge": (["ck.pth", "--imgsz", "100000x100000"], "memory"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_sentence_and_changes_nothing(work: Path, case: str) -> None:
    args, expect = CASES[case]
    refused(PROG, [*args, "-q"] if args else args, work, expect=expect)
    assert not (work / "newdir").exists() and not (work / "pwned").exists()


def test_engine_without_tensorrt_is_refused_before_the_export(work: Path) -> None:
    from scaseg.runtime.tensorrt.installed import find_tensorrt

    if find_tensorrt("standard") is not None:
        pytest.skip("the standard TensorRT is installed here")
    t0 = time.monotonic()
    refused(PROG, ["ck.pth", "--format", "engine", "--tensorrt", "standard", "-q"], work, expect="not installed")
    assert time.monotonic() - t0 < 60  # no fp32 export first (it takes 10-18 s on a quiet 2-core machine)


def test_a_size_beyond_this_machines_memory_is_refused_with_the_estimate(work: Path) -> None:
    from scaseg.export.memory import GiB, available_bytes, estimate_for_model

    have = available_bytes()
    need = estimate_for_model(scaseg.load_model(work / "ck.pth")[0], scaseg.VARIANTS["scaseg-b0"], 3, (4000, 4000), 1)
    if have is None or need < have:
        pytest.skip(f"this machine has {have} bytes available, enough for a 4000x4000 export")
    line = refused(PROG, ["ck.pth", "--imgsz", "4000x4000", "-q"], work, expect="GiB of memory")
    assert f"{need / GiB:.1f} GiB" in line


@pytest.mark.slow
def test_a_full_disk_fails_in_one_sentence_and_leaves_nothing(work: Path) -> None:
    before = tree(work)
    proc, held = on_full_disk(PROG, ["ck.pth", "-o", "full/sub/x.onnx", "--no-simplify", "--parity-images", "1", "-q"],
                              work, work / "full", "1m")
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in one_line(proc, PROG)
    assert held == [], f"left on the full disk: {held}"
    assert set(tree(work)) - set(before) <= {"full"}


def test_ctrl_c_says_nothing_was_kept_and_stale_temporaries_go(work: Path) -> None:
    host = temp_token().split("-")[1]
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale_dir = work / f".scaseg-export-{dead}-{host}.abcd"
    stale_dir.mkdir()
    (stale_dir / "model.fp32.onnx").write_bytes(b"half")
    stale_file = work / f".out.onnx.{dead}-{host}.wxyz.tmp.onnx"
    stale_file.write_bytes(b"half")
    live = work / f".scaseg-export-{os.getpid()}-{host}.live"  # a running writer's folder stays
    live.mkdir()
    before = tree(work)

    def working() -> bool:
        return any(p for p in work.glob(".scaseg-export-*") if p not in (stale_dir, live))

    done, line = interrupt(PROG, ["ck.pth", "-o", "out.onnx", "--no-simplify", "-q"], work, working)
    assert "nothing was written" in line
    after = tree(work)
    gone = {k for k in before if k not in after}
    assert gone == {stale_dir.name, f"{stale_dir.name}/model.fp32.onnx", stale_file.name}
    assert set(after) <= set(before)  # nothing new: no output, no temporary
    live.rmdir()


def test_parity_fails_on_non_finite_outputs(tmp_path: Path) -> None:
    from scaseg.export.onnx_export import ExportOptions, to_onnx
    from scaseg.export.parity import check_parity

    torch.manual_seed(0)
    model = scaseg.build("scaseg-b0", 3).eval()
    from scaseg.metadata import ModelInfo

    proto, info = to_onnx(model, ModelInfo(variant="scaseg-b0", num_classes=3),
                          ExportOptions(imgsz=(64, 64), simplify=False))
    import onnx

    onnx.save(proto, str(tmp_path / "m.onnx"))
    with torch.no_grad():
        model.decode_head.classifier.weight[0, 0] = float("nan")  # PyTorch side only: ONNX Runtime stays finite
    report = check_parity(str(tmp_path / "m.onnx"), model, info, images=1, tolerance=1e9)
    assert report.nonfinite > 0 and not report.ok and "NaN" in report.summary()
