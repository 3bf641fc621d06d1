"""calibration/data.py: which images calibrate and which are held out, held-out data as the guard scores it, the cache."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from scaseg.calibration import data
from scaseg.calibration.ranges import BINS, collect_stats
from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo


def _write(folder: Path, n: int, size: tuple[int, int] = (20, 30), split: str = "") -> None:
    """``n`` random images in ``folder``, or with ``split`` a labelled split of a folder dataset rooted there."""
    rng = np.random.default_rng(n)
    images, labels = (folder / "images" / split, folder / "labels" / split) if split else (folder, None)
    for d in (images, labels):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(images / f"{i:02d}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        if labels is not None:
            cv2.imwrite(str(labels / f"{i:02d}.png"), rng.integers(0, 3, size, dtype=np.uint8))


def test_an_image_folder_holds_out_every_kth_image(tmp_path: Path):
    _write(tmp_path / "f", 10)
    cset = data.open_calibration(str(tmp_path / "f"), calib_num=5)
    assert [it.path.name for it in cset.heldout] == ["04.png", "09.png"]  # a fifth, spread over the folder
    assert [it.path.name for it in cset.calib] == ["00.png", "01.png", "02.png", "03.png", "05.png"]  # up to calib_num
    assert not cset.labelled and "fp32 model's argmax" in cset.describe()


def test_a_dataset_root_calibrates_on_train_and_holds_out_labelled_val(tmp_path: Path):
    root = tmp_path / "ds"
    _write(root, 6, split="train")
    _write(root, 3, split="val")
    (root / "classes.txt").write_text("a\nb\nc\n")
    cset = data.open_calibration(str(root), calib_num=4)
    assert cset.labelled and cset.source == "folder dataset"
    assert len(cset.calib) == 4 and all("train" in str(it.path) for it in cset.calib)
    assert len(cset.heldout) == 3 and all("val" in str(it.path) for it in cset.heldout)


def test_too_few_images_is_one_sentence(tmp_path: Path):
    _write(tmp_path / "few", 5)
    with pytest.raises(ScasegError, match="holds 5 images; at least 6"):
        data.open_calibration(str(tmp_path / "few"), calib_num=8)
    with pytest.raises(ScasegError, match="--calib-num must be at least 4"):
        data.open_calibration(str(tmp_path / "few"), calib_num=2)


def test_heldout_data_fills_a_static_batch_and_scores_at_the_source_size(tmp_path: Path):
    _write(tmp_path / "f", 3, size=(20, 30))
    items = [data.Item(p) for p in sorted((tmp_path / "f").glob("*.png"))]
    info = ModelInfo(variant="tiny", num_classes=3, input_size=(16, 16), batch=2)
    held = data.heldout_data(items, info)
    assert [b.shape for b in held.batches] == [(2, 3, 16, 16), (2, 3, 16, 16)]  # the last image repeated
    np.testing.assert_array_equal(held.batches[1][0], held.batches[1][1])
    assert held.labels is None and len(held.geometry) == 3
    logits = [np.random.default_rng(i).standard_normal((2, 3, 16, 16)).astype(np.float32) for i in range(2)]
    labels = held.to_source(logits, 3)
    assert len(labels) == 3, "the repeated image is not scored twice"
    assert all(y.shape == (20, 30) and y.dtype == np.uint8 for y in labels)
    nhwc = data.heldout_data(items, info.replace(layout="NHWC"))
    assert nhwc.batches[0].shape == (2, 16, 16, 3)


def test_statistics_cache_round_trip_and_refusals(tmp_path: Path):
    info = ModelInfo(variant="tiny", num_classes=3, input_size=(16, 16))
    _write(tmp_path / "f", 2)
    items = [data.Item(p) for p in sorted((tmp_path / "f").glob("*.png"))]
    key = data.cache_key(b"graph", info, items)
    rng = np.random.default_rng(0)
    stats = collect_stats(lambda b: {"t": b}, [rng.standard_normal(1000).astype(np.float32)], ["t"])
    path = tmp_path / "m.calib.npz"
    assert data.load_stats(path, key) == (None, "miss")
    data.save_stats(path, key, stats)
    loaded, status = data.load_stats(path, key)
    assert status == "hit" and loaded is not None and loaded.names == ["t"] and loaded.hist.shape == (1, BINS)
    assert loaded.thresholds("minmax") == pytest.approx(stats.thresholds("minmax"))
    assert data.load_stats(path, data.cache_key(b"other graph", info, items))[1] == \
        "refused (m.calib.npz was made for another model); recalibrated"
    assert "other preprocessing" in data.load_stats(path, data.cache_key(b"graph", info.replace(std=(1.0, 1.0, 1.0)), items))[1]
    path.write_bytes(b"not a zip")
    assert data.load_stats(path, key) == (None, "refused (m.calib.npz is unreadable); recalibrated")
