"""scaseg-train on bad input: inputs checked before --out appears, writes that fail are one sentence, Ctrl-C says
what was kept."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from badinput import interrupt, on_full_disk, one_line, refused, tree

PROG = "scaseg-train"
TINY = ["--variant", "scaseg-b0", "--crop", "32", "--batch", "1", "--workers", "0", "--val-interval", "0",
        "--iters", "1", "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scaseg.data.synth import write_dataset

    root = tmp_path_factory.mktemp("train")
    write_dataset(root / "data", 4, size=(32, 64), video_frames=0, progress=False)
    unlabelled = root / "pics"
    unlabelled.mkdir()
    for i in range(3):
        cv2.imwrite(str(unlabelled / f"{i}.png"), np.zeros((32, 32, 3), np.uint8))
    (root / "junk").mkdir()
    (root / "junk" / "a.txt").write_text("no images here")
    (root / "afile").write_text("not a folder")
    return root


@pytest.mark.parametrize("args,expect", [
    (["--data", "junk", "-o", "o"], "layout"),
    (["--data", "pics", "-o", "o"], "no labels"),
    (["--data", "nope", "-o", "o"], "nope"),
    (["--data", "data", "-o", "o", "--workers", "-1"], "--workers must be 0 or more"),
    (["--data", "data", "-o", "o", "--workers", "x"], "--workers"),
    (["--data", "data", "-o", "o", "--lr", "0"], "--lr must be positive"),
    (["--data", "data", "-o", "o", "--logit-adjust"], "--logit-adjust needs --class-weight balanced"),
    (["--data", "data", "-o", "o", "--logit-adjust", "--class-weight", "balanced", "--logit-adjust-images", "0"],
     "--logit-adjust-images must be at least 1"),
    (["--data", "data"], "-o"),
    (["--data", "data", "-o", "afile"], "not a folder"),
    (["--data", "data", "-o", "/proc/t"], "cannot write"),
    (["--data", "data", "-o", "o", "--pretrained", "o/last.pth"], "is the input"),
    (["--data", "data", "-o", "o", "--resume", "o"], "cannot resume"),
])
def test_bad_input_is_refused_before_the_output_folder_appears(work: Path, args: list[str], expect: str) -> None:
    (work / "o").mkdir(exist_ok=True) if "--pretrained" in args else None
    if "--pretrained" in args:
        (work / "o" / "last.pth").write_bytes(b"x")
    try:
        refused(PROG, [*TINY, *args], work, expect=expect)
    finally:
        if (work / "o" / "last.pth").exists():
            (work / "o" / "last.pth").unlink()
            (work / "o").rmdir()
    assert not (work / "o").exists()


def test_a_full_disk_fails_in_one_sentence_and_leaves_nothing(work: Path) -> None:
    before = tree(work)
    proc, held = on_full_disk(PROG, [*TINY, "--data", "data", "-o", "full/run"], work, work / "full", "2m")
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in one_line(proc, PROG)
    assert held in ([], ["run"]), f"left on the full disk: {held}"
    assert set(tree(work)) - set(before) <= {"full"}


def test_ctrl_c_says_which_checkpoint_was_kept(work: Path) -> None:
    run_dir = work / "run"

    def saved() -> bool:
        return (run_dir / "last.pth").is_file()

    args = [*TINY[:-5], "-q", "--iters", "100000", "--ckpt-interval", "1", "--threads", "1", "--data", "data", "-o", "run"]
    done, line = interrupt(PROG, args, work, saved, settle=0.3)
    assert "kept" in line and "last.pth" in line and "--resume" in line
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
