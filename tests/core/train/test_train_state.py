"""scaseg.train.state as functions: which folder --resume names, which -o a new run may take, the key-by-key check
of a state, the checks of a resumed run, the folder lock (the command's behaviour: test_badinput_resume.py)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from scaseg.errors import ScasegError
from scaseg.train import state as S
from scaseg.train.config import TrainConfig


def _state(**changes: Any) -> dict[str, Any]:
    state = {"format": S.STATE_FORMAT, "version": S.STATE_VERSION, "iteration": 3, "samples": 6, "num_classes": 2,
             "config": {"data": "d", "variant": "scaseg-t", "dataset": "auto"}, "model": {"w": torch.zeros(2)},
             "optimizer": {"state": {}, "param_groups": []}, "scaler": {"scale": 1.0},
             "rng": [{"cpu": torch.get_rng_state(), "cuda": None}], "best_miou": 0.5,
             "history": [{"iteration": 3, "miou": 0.5, "per_class": [0.4, 0.6]}], "classes": ["a", "b"]}
    state.update(changes)
    return {k: v for k, v in state.items() if v is not _DROP}


_DROP = object()


def test_a_whole_state_passes_and_an_older_one_without_the_later_keys_too() -> None:
    assert S.state_problem(_state()) is None
    assert S.state_problem(_state(classes=_DROP, logit_adjustment=_DROP)) is None
    assert S.state_problem(_state(logit_adjustment={"alpha": 0.5, "bias": [0.1, 0.2]})) is None


@pytest.mark.parametrize("changes, words", [
    ({"format": "other"}, "not a scaseg-train state"), ({"version": 2}, "state version 2; this scaseg reads version 1"),
    ({"iteration": True}, "'iteration' is True"), ({"iteration": -1}, "'iteration' is -1"),
    ({"num_classes": 0}, "'num_classes'"), ({"samples": 1.0}, "'samples'"),
    ({"config": {"variant": "v", "dataset": "auto"}}, "lacks 'data'"), ({"model": {}}, "'model' is damaged"),
    ({"model": {"w": [0.0]}}, "'model' is damaged"), ({"optimizer": {"state": {}}}, "'optimizer' is damaged"),
    ({"scaler": {"scale": "1"}}, "'scaler'"), ({"rng": []}, "'rng'"),
    ({"rng": [{"cpu": torch.zeros(3, dtype=torch.uint8)}]}, "'rng'"),
    ({"rng": [{"cpu": torch.get_rng_state(), "cuda": torch.zeros(2)}]}, "'rng'"),
    ({"best_miou": None}, "'best_miou'"), ({"history": [{"iteration": 1, "miou": 0.1, "t": torch.zeros(1)}]}, "'history'"),
    ({"logit_adjustment": {"alpha": "x"}}, "'logit_adjustment'"), ({"classes": ["a", 2]}, "'classes'"),
])
def test_each_damaged_key_is_named(changes: dict, words: str) -> None:
    assert words in (S.state_problem(_state(**changes)) or "")
    assert S.state_problem([1, 2]) == "it is not a scaseg-train state file"


def test_run_folder_takes_the_folder_or_its_state_file_and_makes_it_absolute(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / S.STATE_FILE).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert S.run_folder("run") == run and S.run_folder(f"run/{S.STATE_FILE}") == run
    (tmp_path / "empty").mkdir()
    (tmp_path / "last.pth").write_bytes(b"")
    for given, words in (("empty", "holds no train_state.pt"), ("absent", "does not exist"),
                         ("last.pth", "pass a scaseg-train run folder or the train_state.pt")):
        with pytest.raises(ScasegError, match=words):
            S.run_folder(given)


def test_resume_writes_only_its_own_folder(tmp_path: Path) -> None:
    S.check_resume_output(tmp_path, None)
    S.check_resume_output(tmp_path, str(tmp_path / "." / ""))
    with pytest.raises(ScasegError, match="continues the run in its own folder"):
        S.check_resume_output(tmp_path, str(tmp_path / "other"))


def test_a_new_run_takes_a_new_or_empty_folder_or_one_with_only_its_temporaries(tmp_path: Path) -> None:
    S.check_new_output(tmp_path / "new")
    S.check_new_output(tmp_path)
    (tmp_path / ".last.pth.123-host.abc.tmp.pth").write_bytes(b"")
    S.check_new_output(tmp_path)
    assert S._our_temporary(".metrics.json.1-h.x.tmp") and not S._our_temporary(".other.pth.1.tmp")
    assert not S._our_temporary("last.pth")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ScasegError):
        S.check_new_output(tmp_path)
    (tmp_path / S.STATE_FILE).write_bytes(b"")
    with pytest.raises(ScasegError, match="already holds a training run; pass --resume"):
        S.check_new_output(tmp_path)
    with pytest.raises(ScasegError, match="exists and is not a folder"):
        S.check_new_output(tmp_path / "notes.txt")


def test_load_state_reads_weights_only_and_checks(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / S.STATE_FILE)
    assert S.load_state(tmp_path)["iteration"] == 3
    torch.save(_state(version=9), tmp_path / S.STATE_FILE)
    with pytest.raises(ScasegError, match="state version 9"):
        S.load_state(tmp_path)
    (tmp_path / S.STATE_FILE).write_bytes(b"not a training state")
    with pytest.raises(ScasegError, match="not a readable training state"):
        S.load_state(tmp_path)


def test_a_resumed_run_keeps_its_model_and_classes() -> None:
    cfg = TrainConfig(data="d", out="o", variant="scaseg-t", model_kwargs={"grid": True})
    S.check_same_run({"variant": "scaseg-t", "dataset": "auto", "model_kwargs": {"grid": True}}, cfg)
    with pytest.raises(ScasegError, match="the run used --variant scaseg-b0, not scaseg-t"):
        S.check_same_run({"variant": "scaseg-b0", "dataset": "auto"}, cfg)
    with pytest.raises(ScasegError, match=r"--model-opt \(none\), not grid=True"):
        S.check_same_run({"variant": "scaseg-t", "dataset": "auto"}, cfg)
    S.check_classes({"num_classes": 2}, ["x", "y"], "data")  # an older state: the count only
    with pytest.raises(ScasegError, match="had 2 classes, this data has 3"):
        S.check_classes(_state(), ["a", "b", "c"], "data")
    with pytest.raises(ScasegError, match="class 1 is 'b' in the run, 'c' here"):
        S.check_classes(_state(), ["a", "c"], "data")


def test_weights_and_optimizer_that_do_not_fit_are_one_sentence(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    S.restore_model(model, {k: torch.ones_like(v) for k, v in model.state_dict().items()}, tmp_path, "lin")
    assert torch.equal(model.weight, torch.ones(2, 2))
    with pytest.raises(ScasegError, match=r"do not fit lin \(1 tensor"):
        S.restore_model(model, {"weight": torch.ones(2, 3), "bias": torch.ones(2)}, tmp_path, "lin")
    with pytest.raises(ScasegError, match="missing, extra"):
        S.restore_model(model, {"weight": torch.ones(2, 2)}, tmp_path, "lin")
    opt = torch.optim.AdamW([{"params": model.parameters(), "lr_mult": 1.0}], lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    good = opt.state_dict()
    S.restore_optimizer(torch.optim.AdamW([{"params": model.parameters(), "lr_mult": 1.0}], lr=0.1), good, tmp_path)
    bad = {"state": {0: {**good["state"][0], "exp_avg": torch.zeros(3)}}, "param_groups": good["param_groups"]}
    for damaged in (bad, {"state": {}, "param_groups": []},
                    {"state": {}, "param_groups": [{**good["param_groups"][0], "lr": "fast"}]}):
        fresh = torch.optim.AdamW([{"params": model.parameters(), "lr_mult": 1.0}], lr=0.1)
        with pytest.raises(ScasegError, match="optimizer state does not fit this model"):
            S.restore_optimizer(fresh, damaged, tmp_path)


def test_same_kind() -> None:
    assert S._same_kind(0.5, 1) and S._same_kind(None, False) and S._same_kind([0.9, 0.99], (0.9, 0.999))
    assert not S._same_kind(True, 1.0) and not S._same_kind("x", 1.0) and not S._same_kind((0.9,), (0.9, 0.999))


@pytest.mark.skipif(os.name != "posix", reason="flock")
def test_one_writer_per_folder(tmp_path: Path) -> None:
    first, second = S.FolderLock(tmp_path), S.FolderLock(tmp_path)
    first.acquire()
    first.acquire()  # holding it already: nothing more
    with pytest.raises(ScasegError, match="another scaseg-train is writing"):
        second.acquire()
    first.release()
    second.acquire()
    assert second.fd >= 0
    second.release()
    assert second.fd == -1
