"""Activation statistics from calibration batches, and the clipping threshold each calibration method picks.

Statistics are method-independent (absolute max + a histogram of |x| per tensor), so one calibration pass
serves minmax, entropy and percentile alike and can be cached (see data.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

BINS = 2048  # histogram resolution of |x|; 16x the 128 positive int8 levels, as TensorRT's entropy calibrator
INT8_LEVELS = 128
METHODS = ("minmax", "entropy", "percentile")
PERCENTILE = 99.99
_TINY = 1e-8  # a tensor that is all zeros still needs a valid (non-zero) scale


@dataclass
class TensorStats:
    """Per-tensor |x| maximum and histogram over [0, absmax] with BINS bins."""

    names: list[str]
    absmax: np.ndarray  # (n,) float64
    hist: np.ndarray  # (n, BINS) float64 counts

    def thresholds(self, method: str) -> dict[str, float]:
        """Clipping threshold (symmetric range) per tensor for ``method``."""
        pick = {"minmax": _minmax, "entropy": _entropy, "percentile": _percentile}[method]
        return {name: max(float(pick(self.hist[i], self.absmax[i])), _TINY) for i, name in enumerate(self.names)}


def _add_to_histogram(hist: np.ndarray, top: float, values: np.ndarray) -> tuple[np.ndarray, float]:
    """Accumulate |values| into ``hist`` over [0, top]; widen the range (re-binning old counts) when exceeded."""
    a = np.abs(values.ravel())
    new_max = float(a.max()) if a.size else 0.0
    if not np.isfinite(new_max):
        a = a[np.isfinite(a)]
        new_max = float(a.max()) if a.size else 0.0
    if new_max > top:
        if top > 0 and hist.any():
            # Old bin centres move to their bin in the wider range: one pass, at most half a bin of error.
            centres = (np.arange(BINS) + 0.5) * (top / BINS)
            idx = np.minimum((centres * (BINS / new_max)).astype(np.int64), BINS - 1)
            hist = np.bincount(idx, weights=hist, minlength=BINS)
        top = new_max
    if top > 0 and a.size:
        idx = np.minimum((a * (BINS / top)).astype(np.int64), BINS - 1)
        hist = hist + np.bincount(idx, minlength=BINS)
    return hist, top


def collect_stats(
    run: Callable[[np.ndarray], dict[str, np.ndarray]],
    batches: Iterable[np.ndarray],
    names: list[str],
    progress: Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]] = iter,
) -> TensorStats:
    """Run every batch through ``run`` (batch -> {tensor name: value}) and accumulate statistics of ``names``."""
    hists = {n: np.zeros(BINS) for n in names}
    tops = {n: 0.0 for n in names}
    for batch in progress(batches):
        values = run(batch)
        for n in names:
            hists[n], tops[n] = _add_to_histogram(hists[n], tops[n], values[n])
    return TensorStats(list(names), np.array([tops[n] for n in names]), np.stack([hists[n] for n in names]))


def _minmax(hist: np.ndarray, absmax: float) -> float:
    return absmax


def _percentile(hist: np.ndarray, absmax: float) -> float:
    total = hist.sum()
    if total == 0 or absmax == 0:
        return absmax
    edge = int(np.searchsorted(np.cumsum(hist), total * PERCENTILE / 100.0))
    return min(absmax, (edge + 1) * absmax / BINS)


def _entropy(hist: np.ndarray, absmax: float) -> float:
    """TensorRT-style KL calibration: the threshold whose 128-level quantised histogram diverges least."""
    if hist.sum() == 0 or absmax == 0:
        return absmax
    nz = np.nonzero(hist)[0]
    last = int(nz[-1]) + 1
    if last <= INT8_LEVELS:
        return last * absmax / BINS
    best, best_kl = last, np.inf
    # At most ~64 candidates (steps of >= 8 bins, 1/256 of the range) keep this fast for hundreds of tensors.
    step = max(8, (last - INT8_LEVELS) // 64)
    for i in range(INT8_LEVELS, last + 1, step):
        raw = hist[:i].astype(np.float64)
        p = raw.copy()
        p[-1] += hist[i:].sum()  # reference: clipped outliers pile up in the last bin
        # Candidate: the unclipped bins merged into 128 levels, each spread evenly over its non-empty bins.
        starts = (np.arange(INT8_LEVELS) * i) // INT8_LEVELS
        level = np.repeat(np.arange(INT8_LEVELS), np.diff(np.append(starts, i)))
        sums = np.add.reduceat(raw, starts)
        filled = np.add.reduceat((raw > 0).astype(np.float64), starts)
        q = np.where(raw > 0, (sums / np.maximum(filled, 1))[level], 0.0)
        mask = p > 0
        pn, qn = p[mask] / p.sum(), q[mask] / max(q.sum(), 1e-30)
        qn = np.maximum(qn, 1e-9)  # smoothing: a bin the candidate lost costs a large but finite divergence
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best_kl:
            best, best_kl = i, kl
    return (best + 0.5) * absmax / BINS
