"""scaseg.train.config: TrainConfig.checked's refusals and config_problem, the check of a configuration read back
from a training state (what the command does with them: test_train.py, test_badinput_train.py)."""
from __future__ import annotations

import dataclasses

import pytest

from scaseg.errors import ScasegError
from scaseg.train.config import REQUIRED, TrainConfig, config_problem


def _cfg(**changes) -> TrainConfig:
    return TrainConfig(data="d", out="o", **changes)


def test_the_defaults_pass_and_checked_returns_the_config() -> None:
    cfg = _cfg()
    assert cfg.checked() is cfg


@pytest.mark.parametrize("changes, flag", [
    ({"iters": 0}, "--iters"), ({"batch": 0}, "--batch"), ({"crop": (512, 31)}, "--crop"),
    ({"scale_range": (2.0, 0.5)}, "--scale-range"), ({"scale_range": (0.0, 1.0)}, "--scale-range"),
    ({"lr": 0.0}, "--lr"), ({"lr": float("nan")}, "--lr"), ({"weight_decay": -1e-3}, "--weight-decay"),
    ({"warmup": -1}, "--warmup-iters"), ({"workers": -1}, "--workers"), ({"ohem_thresh": 1.0}, "--ohem-thresh"),
    ({"ohem_thresh": -0.1}, "--ohem-thresh"), ({"ohem_min_kept": 0}, "--ohem-min-kept"),
    ({"class_weight": "inverse"}, "--class-weight"), ({"logit_adjust": True}, "--logit-adjust needs"),
    ({"class_weight": "balanced", "logit_adjust_images": 0}, "--logit-adjust-images"),
    ({"seed": -1}, "--seed"), ({"seed": 2**63}, "--seed"),
])
def test_each_impossible_value_is_one_sentence_naming_its_flag(changes: dict, flag: str) -> None:
    with pytest.raises(ScasegError, match=flag):
        _cfg(**changes).checked()


def test_the_edges_that_can_work_pass() -> None:
    _cfg(iters=1, batch=1, crop=(32, 32), scale_range=(1.0, 1.0), warmup=0, workers=0, weight_decay=0.0,
         ohem_thresh=0.0, ohem_min_kept=1, seed=2**63 - 1, class_weight="balanced", logit_adjust=True).checked()


def test_a_saved_config_round_trips() -> None:
    saved = dataclasses.asdict(_cfg(val_size=(64, 64), model_kwargs={"grid": True, "chunk": 4}))
    assert config_problem(saved) is None
    assert config_problem({**saved, "crop": [256, 256]}) is None  # JSON and torch.save may give lists for tuples
    assert config_problem({**saved, "from_a_newer_scaseg": 1}) is None  # unknown keys: allowed
    assert config_problem({name: saved[name] for name in REQUIRED}) is None  # the rest take their defaults


@pytest.mark.parametrize("values, words", [
    (["data"], "not a table of settings"), ({1: "x"}, "not a table of settings"),
    ({"variant": "v", "dataset": "auto"}, "lacks 'data'"),
    ({"data": "d", "variant": "v", "dataset": "auto", "iters": True}, "'iters' is True, of the wrong type"),
    ({"data": "d", "variant": "v", "dataset": "auto", "iters": 1.5}, "'iters' is 1.5"),
    ({"data": "d", "variant": "v", "dataset": "auto", "lr": "fast"}, "'lr' is 'fast'"),
    ({"data": "d", "variant": "v", "dataset": "auto", "crop": [1, 2, 3]}, "'crop' is [1, 2, 3]"),
    ({"data": "d", "variant": "v", "dataset": "auto", "base_short": "x"}, "'base_short'"),
    ({"data": "d", "variant": "v", "dataset": "auto", "model_kwargs": {"a": [1]}}, "'model_kwargs'"),
])
def test_a_damaged_saved_config_says_which_setting(values, words: str) -> None:
    problem = config_problem(values)
    assert problem is not None and words in problem


def test_ints_are_floats_but_not_the_reverse_and_none_only_where_optional() -> None:
    base = {"data": "d", "variant": "v", "dataset": "auto"}
    assert config_problem({**base, "lr": 1}) is None and config_problem({**base, "base_short": None}) is None
    assert config_problem({**base, "iters": None}) is not None
    long = config_problem({**base, "iters": [7] * 100})
    assert long == "its config's 'iters' is " + repr([7] * 100)[:37] + "..., of the wrong type"  # cut to 40 characters
