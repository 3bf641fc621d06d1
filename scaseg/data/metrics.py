"""Segmentation metrics from a streaming confusion matrix (mmsegmentation's definitions), in numpy.

Intersection and union are summed over the whole dataset before dividing, not averaged per image. A class
absent from both the predictions and the labels has IoU nan and is left out of the mean, as in
mmsegmentation's ``mean_iou``; pixels whose label is the ignore index count nowhere.

The one convention of the project: a prediction is scored at the source resolution of its label. The model's
label map is brought back to the image's own size first (``scaseg.runtime.preprocess.labels_to_source``: letterbox
padding cropped, nearest neighbour), never the label down to the network size. scaseg-bench, training validation
and the INT8 accuracy guard all score this way, with this module.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence, Union

import numpy as np

from scaseg.errors import ScasegError


def _as_int_array(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "ui":
        raise ScasegError(f"{what} must be an integer label map, got dtype {x.dtype}")
    return x


def _nanmean(values: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan -> nan, without numpy's warning
        return float(np.nanmean(values)) if values.size else math.nan


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


class SegMetrics:
    """Accumulates a (num_classes x num_classes) confusion matrix, rows = label, columns = prediction."""

    def __init__(self, num_classes: int, ignore_index: Optional[int] = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)  # None: every pixel counts
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.confusion[:] = 0

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        """Add one (H, W) prediction/label pair or a batch (B, H, W); pixels labelled ignore_index are skipped."""
        pred = _as_int_array(pred, "the prediction")
        label = _as_int_array(label, "the label")
        if pred.shape != label.shape:
            raise ScasegError(f"the prediction is {pred.shape} but the label is {label.shape}; they must match")
        n = self.num_classes
        t, p = label.ravel(), pred.ravel()
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            if not keep.all():
                t, p = t[keep], p[keep]
        if t.size == 0:
            return
        t_min, t_max = int(t.min()), int(t.max())
        if t_min < 0 or t_max >= n:
            bad = t_max if t_max >= n else t_min
            ignored = "" if self.ignore_index is None else f" (and not the ignore index {self.ignore_index})"
            raise ScasegError(f"the label holds class {bad}, outside 0..{n - 1}{ignored}")
        p_min, p_max = int(p.min()), int(p.max())
        if p_min < 0 or p_max >= n:
            bad = p_max if p_max >= n else p_min
            raise ScasegError(f"the prediction holds class {bad}, outside 0..{n - 1}: does the model have "
                              f"{n} classes?")
        # Small index types when they fit: the int64 copies would cost more than the counting itself.
        if n * n <= np.iinfo(np.uint16).max:
            index: np.ndarray = t.astype(np.uint16) * np.uint16(n) + p.astype(np.uint16)
        else:
            index = t.astype(np.int64) * n + p.astype(np.int64)
        self.confusion += np.bincount(index, minlength=n * n).reshape(n, n)

    def merge(self, other: "SegMetrics") -> "SegMetrics":
        """Add another accumulator's counts into this one (e.g. from other processes); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge metrics over {other.num_classes} classes into {self.num_classes}")
        self.confusion += other.confusion
        return self

    def compute(self) -> dict:
        """miou, iou (per class, nan when absent), acc (per-class recall), pixel_acc, mean_acc, num_pixels."""
        return metrics_from_confusion(self.confusion)


def metrics_from_confusion(confusion: np.ndarray) -> dict:
    """The metric dict of a confusion matrix (rows = label, columns = prediction); fractions in 0..1."""
    conf = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(conf).astype(np.float64)
    area_label = conf.sum(axis=1).astype(np.float64)
    area_pred = conf.sum(axis=0).astype(np.float64)
    iou = _ratio(tp, area_label + area_pred - tp)
    acc = _ratio(tp, area_label)
    total = float(area_label.sum())
    return {
        "miou": _nanmean(iou),
        "iou": [float(v) for v in iou],
        "acc": [float(v) for v in acc],
        "mean_acc": _nanmean(acc),
        "pixel_acc": float(tp.sum() / total) if total else math.nan,
        "num_pixels": int(total),
    }


LabelMaps = Union[np.ndarray, Sequence[np.ndarray]]


def label_agreement(a: LabelMaps, b: LabelMaps, ignore_index: Optional[int] = None) -> float:
    """Fraction of pixels where two label maps agree; pixels where either is ``ignore_index`` are skipped.

    ``a`` and ``b`` may be lists of label maps (pairwise, e.g. one per batch): the fraction is over all their pixels.
    """
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        if len(a) != len(b):
            raise ScasegError(f"cannot compare {len(a)} label maps with {len(b)}")
        pairs = list(zip(a, b))
    else:
        pairs = [(a, b)]
    same = count = 0
    for x, y in pairs:
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            raise ScasegError(f"cannot compare label maps of shapes {x.shape} and {y.shape}")
        if ignore_index is None:
            same, count = same + int(np.count_nonzero(x == y)), count + x.size
        else:
            keep = (x != ignore_index) & (y != ignore_index)
            same, count = same + int(np.count_nonzero((x == y) & keep)), count + int(keep.sum())
    return same / count if count else math.nan


def format_metrics(result: dict, class_names: Optional[Sequence[str]] = None) -> str:
    """A plain-text table: one row per class (IoU, accuracy), then mIoU, mean accuracy and pixel accuracy, in %."""
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(result["iou"]))]
    width = max([len("class")] + [len(n) for n in names])
    rows = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}"]
    for name, iou, acc in zip(names, result["iou"], result["acc"]):
        rows.append(f"{name:<{width}}  {_pct(iou):>6}  {_pct(acc):>6}")
    rows.append(f"{'mIoU':<{width}}  {_pct(result['miou']):>6}")
    rows.append(f"{'mAcc':<{width}}  {_pct(result['mean_acc']):>6}")
    rows.append(f"{'aAcc':<{width}}  {_pct(result['pixel_acc']):>6}")
    return "\n".join(rows)


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100.0 * value:.2f}"
