"""Shipped weights: scaseg.weights_path, half-precision checkpoints, and the recipe's checkpoint segments new scenes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import ROOT

import scaseg
from scaseg.data.classes import CITYSCAPES_CLASSES
from scaseg.errors import ScasegError
from scaseg.data.metrics import SegMetrics
from scaseg.runtime.preprocess import labels_to_source, preprocess
from scaseg.data.synth import render_scene

NAME = "scaseg-t-synth"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # With two OpenMP threads spinning on two shared cores, one forward can take seconds instead of 0.1 s
    # (docs/training.md); one thread keeps these tests fast whatever else the machine runs.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_half_checkpoint_is_half_the_size_and_loads_as_float32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = scaseg.build("scaseg-t", num_classes=19).eval()
    for m in model.modules():  # non-default BatchNorm statistics: buffers must come back exactly
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(1e-6, 2)
    full = scaseg.save_checkpoint(model, tmp_path / "full.pth", class_names=list(CITYSCAPES_CLASSES))
    half = scaseg.save_checkpoint(model, tmp_path / "half.pth", class_names=list(CITYSCAPES_CLASSES), half=True)
    assert 0.45 < half.stat().st_size / full.stat().st_size < 0.55

    loaded, info = scaseg.load_model(half)
    assert info.class_names == list(CITYSCAPES_CLASSES)
    params = dict(model.named_parameters())
    for name, value in loaded.state_dict().items():
        want = model.state_dict()[name]
        assert value.dtype == want.dtype, name  # upcast: the loaded model is a float32 model
        if name in params:
            assert torch.equal(value, want.half().float()), name
        else:
            assert torch.equal(value, want), name  # buffers are stored as they are
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert (loaded(x).argmax(1) == model(x).argmax(1)).float().mean() > 0.99


def test_weights_path_names_the_shipped_files_and_refuses_others() -> None:
    assert NAME in scaseg.shipped_weights()
    path = Path(scaseg.weights_path(NAME))
    assert path.is_file() and path.parent.name == "weights"
    assert path.with_suffix(".json").is_file()
    for bad in ("no-such-weights", "../checkpoint", ""):
        with pytest.raises(ScasegError, match="no shipped weights named"):
            scaseg.weights_path(bad)


def test_weights_path_keeps_import_scaseg_torch_free() -> None:
    code = ("import sys, scaseg; p = scaseg.weights_path('scaseg-t-synth'); "
            "assert 'torch' not in sys.modules, 'torch was imported'; print(p)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"{NAME}.pth")


def test_provenance_matches_the_shipped_checkpoint() -> None:
    path = Path(scaseg.weights_path(NAME))
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["file"] == path.name and meta["bytes"] == path.stat().st_size
    assert meta["variant"] == "scaseg-t" and meta["final_val_miou"] >= 0.70
    assert set(meta["per_class_iou"]) == {"road", "sidewalk", "building", "vegetation", "sky", "person", "car"}
    for key in ("command", "seed", "iterations", "wall_time_s", "date", "machine"):
        assert meta[key] not in (None, "", {}), key
    assert path.stat().st_size < 12 * 2**20  # stored as float16


def test_shipped_checkpoint_segments_fresh_synthetic_scenes() -> None:
    model, info = scaseg.load_model(scaseg.weights_path(NAME))
    assert info.variant == "scaseg-t" and info.num_classes == 19
    assert info.class_names == list(CITYSCAPES_CLASSES)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert info.input_size is not None
    metrics = SegMetrics(19)
    # Seeds far from the recipe's: scaseg-synth derives its scenes' seeds from SeedSequence([seed, 0, i]).
    for seed in (987_654_321, 123_456_789):
        image, label = render_scene(seed, (256, 512))
        x, geom = preprocess(image, info.input_size, info.mean, info.std, "stretch")
        with torch.no_grad():
            pred = model(torch.from_numpy(x)[None]).argmax(1)[0].numpy().astype(np.uint8)
        metrics.update(labels_to_source(pred, geom), label)
    result = metrics.compute()
    assert result["pixel_acc"] > 0.8, result["pixel_acc"]


def test_an_untrained_model_fails_the_same_accuracy_check() -> None:
    # The check above can fail: a randomly initialised scaseg-t is far below it.
    torch.manual_seed(0)
    model = scaseg.build("scaseg-t", num_classes=19).eval()
    image, label = render_scene(987_654_321, (256, 512))
    x, geom = preprocess(image, (128, 256), (123.675, 116.28, 103.53), (58.395, 57.12, 57.375), "stretch")
    with torch.no_grad():
        pred = model(torch.from_numpy(x)[None]).argmax(1)[0].numpy().astype(np.uint8)
    metrics = SegMetrics(19)
    metrics.update(labels_to_source(pred, geom), label)
    assert metrics.compute()["pixel_acc"] < 0.5



def test_half_refuses_weights_beyond_the_float16_range(tmp_path: Path) -> None:
    model = scaseg.build("scaseg-t", num_classes=19)
    with torch.no_grad():
        model.decode_head.classifier.weight[0, 0] = 1e6
    with pytest.raises(ScasegError, match="float16"):
        scaseg.save_checkpoint(model, tmp_path / "big.pth", half=True)
    assert not list(tmp_path.iterdir())
