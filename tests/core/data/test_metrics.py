"""Segmentation metrics: equal to a brute-force count of mmsegmentation's definition, streaming, strict on bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest

from scaseg.errors import ScasegError
from scaseg.data.metrics import SegMetrics, format_metrics, label_agreement, metrics_from_confusion


def _brute_force(pairs, num_classes, ignore_index=255):
    """mmsegmentation's total_intersect_and_union + mean_iou, counted pixel by pixel in plain Python."""
    inter = [0] * num_classes
    area_pred = [0] * num_classes
    area_label = [0] * num_classes
    for pred, label in pairs:
        for p, t in zip(pred.ravel().tolist(), label.ravel().tolist()):
            if t == ignore_index:
                continue
            area_pred[p] += 1
            area_label[t] += 1
            if p == t:
                inter[t] += 1
    iou = [inter[c] / (area_pred[c] + area_label[c] - inter[c]) if area_pred[c] + area_label[c] else math.nan
           for c in range(num_classes)]
    acc = [inter[c] / area_label[c] if area_label[c] else math.nan for c in range(num_classes)]
    present = [v for v in iou if not math.isnan(v)]
    present_acc = [v for v in acc if not math.isnan(v)]
    return {
        "iou": iou, "acc": acc, "miou": sum(present) / len(present), "mean_acc": sum(present_acc) / len(present_acc),
        "pixel_acc": sum(inter) / sum(area_label), "num_pixels": sum(area_label),
    }


def _assert_same(got, want):
    np.testing.assert_allclose(got["iou"], want["iou"], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got["acc"], want["acc"], rtol=1e-12, equal_nan=True)
    for key in ("miou", "mean_acc", "pixel_acc"):
        assert got[key] == pytest.approx(want[key], rel=1e-12), key
    assert got["num_pixels"] == want["num_pixels"]


def test_equals_brute_force_on_random_data_with_ignore_and_absent_classes():
    rng = np.random.default_rng(0)
    n = 7
    pairs = []
    for shape in ((13, 17), (9, 31), (20, 8)):
        # Classes 5 and 6 never appear in labels; 6 is never predicted either (its IoU must be nan).
        label = rng.integers(0, 5, size=shape).astype(np.uint8)
        label[rng.random(shape) < 0.2] = 255
        pred = rng.integers(0, 6, size=shape).astype(np.uint8)
        agree = rng.random(shape) < 0.5
        pred[agree & (label != 255)] = label[agree & (label != 255)]
        pairs.append((pred, label))
    metrics = SegMetrics(n)
    for pred, label in pairs:
        metrics.update(pred, label)
    got = metrics.compute()
    want = _brute_force(pairs, n)
    _assert_same(got, want)
    assert math.isnan(got["iou"][6]) and got["iou"][5] == 0.0  # predicted but absent: counts as 0 in the mean
    assert 0.0 < got["miou"] < 1.0


def test_many_classes_use_a_wide_index_and_still_match():
    rng = np.random.default_rng(2)
    label = rng.integers(0, 300, size=(40, 50)).astype(np.uint16)
    label[:3] = 255
    pred = np.where(rng.random((40, 50)) < 0.6, label, rng.integers(0, 300, size=(40, 50))).astype(np.int32)
    pred[label == 255] = 7
    m = SegMetrics(300)
    m.update(pred, label)
    _assert_same(m.compute(), _brute_force([(pred, label)], 300))


def test_dataset_level_not_per_image_average():
    # Image 1: class 0 perfect on 1 pixel; image 2: class 0 wrong on 3 pixels. Dataset IoU(0) = 1/4, not (1 + 0)/2.
    m = SegMetrics(2)
    m.update(np.array([[0]]), np.array([[0]]))
    m.update(np.array([[1, 1, 1]]), np.array([[0, 0, 0]]))
    r = m.compute()
    assert r["iou"] == [0.25, 0.0]
    assert r["miou"] == pytest.approx(0.125)
    assert r["pixel_acc"] == pytest.approx(0.25)
    assert r["num_pixels"] == 4


def test_batch_update_equals_per_image_updates_and_memory_is_constant():
    rng = np.random.default_rng(1)
    preds = rng.integers(0, 4, size=(5, 6, 7))
    labels = rng.integers(0, 4, size=(5, 6, 7)).astype(np.int64)
    labels[:, 0, :] = 255
    batch, single = SegMetrics(4), SegMetrics(4)
    batch.update(preds, labels)
    for p, t in zip(preds, labels):
        single.update(p, t)
    np.testing.assert_array_equal(batch.confusion, single.confusion)
    assert batch.confusion.shape == (4, 4) and batch.confusion.dtype == np.int64
    assert batch.confusion.sum() == 5 * 5 * 7  # the ignored row is not counted
    merged = SegMetrics(4).merge(batch).merge(single)
    np.testing.assert_array_equal(merged.confusion, 2 * batch.confusion)
    batch.reset()
    assert batch.confusion.sum() == 0


def test_custom_ignore_index_and_all_ignored():
    m = SegMetrics(3, ignore_index=0)
    m.update(np.array([[1, 2, 2]]), np.array([[0, 2, 1]]))
    np.testing.assert_array_equal(m.confusion, [[0, 0, 0], [0, 0, 1], [0, 0, 1]])
    empty = SegMetrics(3)
    empty.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8))
    r = empty.compute()
    assert math.isnan(r["miou"]) and math.isnan(r["pixel_acc"]) and r["num_pixels"] == 0


def test_bad_input_is_one_clear_error():
    m = SegMetrics(3)
    with pytest.raises(ScasegError, match="prediction is"):
        m.update(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))
    with pytest.raises(ScasegError, match="prediction holds class 3"):
        m.update(np.full((2, 2), 3, np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ScasegError, match="label holds class 7"):
        m.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 7, np.uint8))
    with pytest.raises(ScasegError, match="integer"):
        m.update(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8))
    assert m.confusion.sum() == 0  # nothing half-counted


def test_metrics_from_confusion_and_table():
    r = metrics_from_confusion(np.array([[3, 1], [0, 4]]))
    assert r["iou"] == pytest.approx([0.75, 0.8])
    assert r["acc"] == pytest.approx([0.75, 1.0])
    table = format_metrics(r, ["road", "sky"])
    assert "road" in table and "75.00" in table and "mIoU" in table and "77.50" in table


def test_label_agreement():
    a = np.array([[0, 1, 2, 255]])
    b = np.array([[0, 1, 1, 2]])
    assert label_agreement(a, b) == pytest.approx(0.5)
    assert label_agreement(a, b, ignore_index=255) == pytest.approx(2 / 3)
    assert label_agreement(a, a) == 1.0
    with pytest.raises(ScasegError, match="shapes"):
        label_agreement(a, b.T)


def test_label_agreement_pools_lists_of_maps_over_their_pixels():
    a = [np.zeros((1, 2, 2), np.uint8), np.zeros((1, 1, 4), np.uint8)]
    b = [np.array([[[0, 1], [1, 1]]], np.uint8), np.zeros((1, 1, 4), np.uint8)]
    assert label_agreement(a, b) == pytest.approx(5 / 8)  # pooled, not the mean of 1/4 and 1
    with pytest.raises(ScasegError, match="2 label maps with 1"):
        label_agreement(a, b[:1])


def test_no_ignore_index_counts_every_pixel():
    pred = np.array([[255, 0]], np.uint8)
    label = np.array([[255, 0]], np.uint8)
    m = SegMetrics(256, ignore_index=None)
    m.update(pred, label)
    assert m.compute()["num_pixels"] == 2 and m.compute()["iou"][255] == 1.0
    default = SegMetrics(256)
    default.update(pred, label)
    assert default.compute()["num_pixels"] == 1
