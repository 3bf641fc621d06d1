"""scaseg-train's output folders: --resume writes only the run it was given (copied, moved, from another directory),
-o never takes over a folder of the user's, a damaged or foreign state is one line, one writer per run folder."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest
import torch

from badinput import command, env, refused, run, tree

PROG = "scaseg-train"
STATE = "train_state.pt"
TINY = ["--variant", "scaseg-b0", "--crop", "32", "--batch", "1", "--workers", "0", "--val-interval", "0",
        "--threads", "1", "-q"]
CLASSES = ["road", "sky", "car"]


def _folder_dataset(root: Path, classes: list[str]) -> Path:
    """A tiny `folder` dataset: 3 train and 1 val image of 32x32 with labels in 0..2."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 1)):
        for folder in ("images", "labels"):
            (root / folder / split).mkdir(parents=True)
        for i in range(count):
            cv2.imwrite(str(root / "images" / split / f"{i}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
            cv2.imwrite(str(root / "labels" / split / f"{i}.png"), rng.integers(0, 3, (32, 32), dtype=np.uint8))
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def _sums(root: Path) -> dict[str, str]:
    """Every file under ``root``: relative path -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _iteration(run_dir: Path) -> int:
    return torch.load(run_dir / STATE, map_location="cpu", weights_only=True)["iteration"]


def _ok(args: list[Any], cwd: Path) -> subprocess.CompletedProcess:
    proc = run(PROG, [*TINY, *args], cwd)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/ (a folder dataset) and run/ (one scaseg-train run of 1 iteration), trained from ``work`` with
    relative paths, as a user types them."""
    root = tmp_path_factory.mktemp("resume")
    _folder_dataset(root / "data", CLASSES)
    _ok(["--data", "data", "--dataset", "folder", "-o", "run", "--iters", "1"], root)
    assert _iteration(root / "run") == 1
    return root


@pytest.fixture()
def copy(work: Path, tmp_path: Path) -> Path:
    """A copy of the module's run, in a folder of its own."""
    return Path(shutil.copytree(work / "run", tmp_path / "copy"))


# -- resume writes only the run it was given -------------------------------------------------------------------

@pytest.mark.parametrize("form", ["folder", "state file"])
def test_resuming_a_copy_writes_the_copy_and_leaves_the_original(work: Path, copy: Path, form: str) -> None:
    before, original = tree(work / "run"), _sums(work / "run")
    target = copy if form == "folder" else copy / STATE
    proc = _ok(["--resume", target, "--iters", "2"], work)
    assert tree(work / "run") == before and _sums(work / "run") == original
    assert _iteration(copy) == 2
    assert str(copy / "last.pth") in proc.stdout
    assert not [p.name for p in copy.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_resuming_a_moved_run_continues_where_it_now_is(work: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(work / "run", tmp_path / "first")
    moved.parent.mkdir()
    (tmp_path / "first").rename(moved)  # the state still records work/run as its folder
    original = _sums(work / "run")
    _ok(["--resume", moved, "--iters", "2"], tmp_path)
    assert _iteration(moved) == 2 and _sums(work / "run") == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]


@pytest.mark.parametrize("spelling", ["absolute", "relative"])
@pytest.mark.slow
def test_resuming_from_another_directory_writes_the_given_run(work: Path, copy: Path, tmp_path: Path,
                                                              spelling: str) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    target = copy if spelling == "absolute" else Path("..") / copy.name
    original = _sums(work / "run")
    _ok(["--resume", target, "--iters", "2"], elsewhere)
    assert list(elsewhere.iterdir()) == []  # no ./run, no ./runs: nothing written where the command ran
    assert _iteration(copy) == 2 and _sums(work / "run") == original


@pytest.mark.slow
def test_a_state_recording_a_relative_folder_is_resumed_where_it_lies(work: Path, copy: Path, tmp_path: Path) -> None:
    # States of earlier versions recorded -o and --data as typed: "runs/t" from wherever the run was started.
    state = torch.load(copy / STATE, map_location="cpu", weights_only=True)
    state["config"].update(out="runs/t", data="data")
    torch.save(state, copy / STATE)
    elsewhere = tmp_path / "cwd"
    (elsewhere / "runs" / "t").mkdir(parents=True)  # a run of the same name here must not be touched either
    line = refused(PROG, ["--resume", copy], elsewhere, expect="pass --data")
    assert "data" in line
    _ok(["--resume", copy, "--data", work / "data", "--iters", "2"], elsewhere)
    assert _iteration(copy) == 2
    assert [str(p.relative_to(elsewhere)) for p in sorted(elsewhere.rglob("*"))] == ["runs", "runs/t"]


# -- what -o may be ----------------------------------------------------------------------------------------------

def _users_files(folder: Path, work: Path, kind: str) -> None:
    folder.mkdir()
    if kind == "bytes":
        (folder / "last.pth").write_bytes(b"my own weights")
        (folder / "metrics.json").write_text('{"mine": true}')
    elif kind == "a model of mine":
        shutil.copy(work / "run" / "last.pth", folder / "last.pth")  # a real scaseg checkpoint, but no run folder
        (folder / "notes.txt").write_text("keep")
    else:
        (folder / "metrics.json").write_text("[]")


@pytest.mark.parametrize("kind", ["bytes", "a model of mine", "metrics only"])
def test_output_over_a_folder_of_the_users_is_refused_untouched(work: Path, tmp_path: Path, kind: str) -> None:
    _users_files(tmp_path / "mine", work, kind)
    sums = _sums(tmp_path / "mine")
    refused(PROG, [*TINY, "--data", work / "data", "-o", "mine", "--iters", "1"], tmp_path,
            expect="is not empty and is not a scaseg-train run")
    assert _sums(tmp_path / "mine") == sums


@pytest.mark.slow
def test_output_over_a_previous_run_needs_resume(work: Path, copy: Path) -> None:
    sums = _sums(copy)
    refused(PROG, [*TINY, "--data", work / "data", "-o", copy, "--iters", "1"], copy.parent, expect=f"--resume {copy}")
    assert _sums(copy) == sums
    _ok(["--resume", copy, "-o", copy, "--iters", "2"], copy.parent)  # -o may repeat the run's own folder
    assert _iteration(copy) == 2


def test_resume_with_another_output_folder_is_refused(work: Path, copy: Path) -> None:
    sums = _sums(copy)
    refused(PROG, ["--resume", copy, "-o", "branch", "--iters", "2"], copy.parent, expect="copy its folder")
    assert _sums(copy) == sums


def test_output_holding_only_a_killed_runs_temporaries_is_reused(work: Path, tmp_path: Path) -> None:
    from scaseg.fileio import temp_token

    out = tmp_path / "out"
    out.mkdir()
    host = temp_token().split("-")[1]
    (out / f".{STATE}.999999999-{host}.abc.tmp.pt").write_bytes(b"half a state")  # its writer is gone
    _ok(["--data", work / "data", "-o", out, "--iters", "1"], tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["last.pth", "metrics.json", STATE]


# -- --resume of something that is not a run ---------------------------------------------------------------------

def _not_a_run(where: Path, kind: str) -> Path:
    if kind == "missing":
        return where / "nowhere"
    if kind == "empty folder":
        (where / "empty").mkdir()
        return where / "empty"
    if kind == "folder of the user's":
        (where / "mine").mkdir()
        (where / "mine" / "last.pth").write_bytes(b"mine")
        return where / "mine"
    if kind == "another file":
        (where / "state.pt").write_bytes(b"\x00garbage")
        return where / "state.pt"
    if kind == "folder named like the state":
        (where / "r" / STATE).mkdir(parents=True)
        return where / "r"
    os.mkfifo(where / STATE)  # a reader of a FIFO would wait for a writer forever
    return where


@pytest.mark.parametrize("kind", ["missing", "empty folder", "folder of the user's", "another file",
                                  "folder named like the state", "fifo"])
def test_resume_of_a_folder_that_is_not_a_run_is_one_line(work: Path, tmp_path: Path, kind: str) -> None:
    target = _not_a_run(tmp_path, kind)
    refused(PROG, ["--resume", target], tmp_path, expect="cannot resume", timeout=60)


# -- damaged and foreign states ----------------------------------------------------------------------------------

class Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned",))


def _reshape_moment(state: dict) -> None:
    moments = next(iter(state["optimizer"]["state"].values()))
    moments["exp_avg"] = torch.zeros(3)


TAMPER: dict[str, tuple[Callable[[dict], Any], str]] = {  # name: (the change, what the one line says)
    "iteration is text": (lambda s: s.update(iteration="many"), "its 'iteration' is 'many'"),
    "iters is text": (lambda s: s["config"].update(iters="x"), "its config's 'iters' is 'x'"),
    "no data in config": (lambda s: s["config"].pop("data"), "its config lacks 'data'"),
    "history holds a tensor": (lambda s: s.update(history=[{"iteration": 1, "miou": torch.ones(1)}]),
                               "its 'history' is damaged"),
    "a weight is reshaped": (lambda s: s["model"].update({next(iter(s["model"])): torch.zeros(2, 2)}),
                             "its model weights do not fit scaseg-b0"),
    "NaN weights": (lambda s: [t.fill_(float("nan")) for t in s["model"].values() if t.is_floating_point()],
                    "NaN or infinite"),
    "optimizer moment reshaped": (_reshape_moment, "its optimizer state does not fit this model"),
    "betas is text": (lambda s: s["optimizer"]["param_groups"][0].update(betas="fast"),
                      "its optimizer state does not fit this model"),
    "rng is bytes of another size": (lambda s: s.update(rng=[{"cpu": torch.zeros(7, dtype=torch.uint8), "cuda": None}]),
                                     "its 'rng' is damaged"),
    "model_kwargs holds a list": (lambda s: s["config"].update(model_kwargs={"dropout": [0.1]}),
                                  "its config's 'model_kwargs'"),
    "version 99": (lambda s: s.update(version=99), "state version 99"),
    "scaler holds text": (lambda s: s.update(scaler={"scale": "big"}), "its 'scaler' is damaged"),
    "seed out of range": (lambda s: s["config"].update(seed=2**70), "--seed must be in"),
    "threads 10000": (lambda s: s["config"].update(threads=10000), "recorded thread count"),
    "threads -1": (lambda s: s["config"].update(threads=-1), "recorded thread count"),
}


@pytest.mark.parametrize("name", sorted(TAMPER))
@pytest.mark.slow
def test_a_tampered_state_is_one_line_and_nothing_changes(work: Path, copy: Path, name: str) -> None:
    change, expect = TAMPER[name]
    state = torch.load(copy / STATE, map_location="cpu", weights_only=True)
    change(state)
    torch.save(state, copy / STATE)
    sums = _sums(copy)
    refused(PROG, ["--resume", copy, "--iters", "3"], copy.parent, expect=expect)
    assert _sums(copy) == sums


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty", "python objects"])
def test_an_unreadable_state_is_one_line(work: Path, copy: Path, damage: str) -> None:
    data = (copy / STATE).read_bytes()
    if damage == "truncated":
        (copy / STATE).write_bytes(data[: len(data) // 2])
    elif damage == "random bytes":
        (copy / STATE).write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    elif damage == "empty":
        (copy / STATE).write_bytes(b"")
    else:
        torch.save({"format": "scaseg-train-state", "evil": Evil()}, copy / STATE)
    sums = _sums(copy)
    refused(PROG, ["--resume", copy], copy.parent, expect="cannot resume")
    assert _sums(copy) == sums and not (copy.parent / "pwned").exists()


# -- resuming with other settings --------------------------------------------------------------------------------

@pytest.mark.parametrize("args,expect", [
    (["--variant", "scaseg-b1"], "the run used --variant scaseg-b0"),
    (["--model-opt", "dropout=0.3"], "--model-opt"),
    (["--dataset", "cityscapes"], "the run used --dataset folder"),
    (["--data", "other-classes"], "class 1 is 'sky' in the run, 'building' here"),
    (["--data", "four-classes"], "the run had 3 classes"),
])
@pytest.mark.slow
def test_resume_with_settings_that_do_not_fit_the_run_is_refused(work: Path, copy: Path, args: list[str],
                                                                  expect: str) -> None:
    if "other-classes" in args and not (work / "other-classes").exists():
        _folder_dataset(work / "other-classes", ["road", "building", "car"])
    if "four-classes" in args and not (work / "four-classes").exists():
        _folder_dataset(work / "four-classes", ["road", "sky", "car", "bus"])
    sums = _sums(copy)
    refused(PROG, ["--resume", copy, "--iters", "2", *args], work, expect=expect)
    assert _sums(copy) == sums


@pytest.mark.slow
def test_resume_on_the_same_classes_elsewhere_continues(work: Path, copy: Path, tmp_path: Path) -> None:
    moved = Path(shutil.copytree(work / "data", tmp_path / "data-moved"))
    _ok(["--resume", copy, "--data", moved, "--iters", "2"], tmp_path)
    assert _iteration(copy) == 2


# -- one writer per run folder -----------------------------------------------------------------------------------

def _start(args: list[Any], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(command(PROG, [*TINY, *args]), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env())


def _stop(proc: subprocess.Popen) -> str:
    """Ctrl-C; returns the interrupted line (validation lines before it are results, printed with -q too)."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{PROG}: interrupted"), err
    return last


def _wait_for(check: Callable[[], bool], proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not check() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None and check(), proc.communicate()


@pytest.mark.slow  # two trainings at once, or one that runs until interrupted
def test_a_second_run_into_a_folder_being_written_is_refused(work: Path, copy: Path, tmp_path: Path) -> None:
    first = _start(["--resume", copy, "--iters", "100000", "--ckpt-interval", "1"], tmp_path)
    elsewhere = tmp_path / "second"  # the first run keeps writing under tmp_path
    elsewhere.mkdir()
    try:
        _wait_for(lambda: _iteration(copy) > 1, first)
        for args in (["--resume", copy], ["--resume", copy / STATE, "--iters", "5"]):
            refused(PROG, args, elsewhere, expect="another scaseg-train is writing")
    finally:
        _stop(first)
    assert _iteration(copy) > 1


@pytest.mark.slow  # two trainings at once, or one that runs until interrupted
def test_two_new_runs_into_one_folder_one_is_refused(work: Path, tmp_path: Path) -> None:
    out = tmp_path / "shared"
    first = _start(["--data", work / "data", "-o", out, "--iters", "100000", "--ckpt-interval", "1000"], tmp_path)
    try:
        _wait_for(out.is_dir, first)  # the folder exists, held, before the first checkpoint
        refused(PROG, [*TINY, "--data", work / "data", "-o", out, "--iters", "1"], tmp_path,
                expect="another scaseg-train is writing", allowed=["shared"])
    finally:
        line = _stop(first)
    assert "nothing was saved" in line and not out.exists()  # the folder it created, empty, went with it


@pytest.mark.slow  # two trainings at once, or one that runs until interrupted
def test_a_run_interrupted_after_its_first_validation_is_a_run(work: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [*TINY, "--data", work / "data", "-o", out, "--iters", "100000", "--val-interval", "1",
            "--ckpt-interval", "100000"]
    first = subprocess.Popen(command(PROG, args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env())
    try:
        _wait_for((out / "best.pth").is_file, first)
    finally:
        _stop(first)
    assert (out / STATE).is_file()  # written before best.pth: the folder is recognised as a run
    refused(PROG, [*TINY, "--data", work / "data", "-o", out, "--iters", "1"], tmp_path, expect="--resume")
    _ok(["--resume", out, "--iters", str(_iteration(out) + 1), "--val-interval", "0"], tmp_path)
