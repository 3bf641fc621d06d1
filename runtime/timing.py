"""Latency bookkeeping: a monotonic stopwatch and the summary statistics every benchmark reports."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def summarize(seconds: Sequence[float], items_per_run: int = 1) -> dict:
    """Latencies in seconds -> {"mean", "p50", "p90", "p99", "min", "max"} in milliseconds, plus "fps".

    ``items_per_run`` is the batch size: FPS counts images, latency counts calls.
    """
    if len(seconds) == 0:
        raise ValueError("no timings to summarize")
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    mean = float(ms.mean())
    return {
        "latency_ms": {
            "mean": mean,
            "p50": float(np.percentile(ms, 50)),
            "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)),
            "min": float(ms.min()),
            "max": float(ms.max()),
        },
        "fps": items_per_run * 1000.0 / mean if mean > 0 else float("inf"),
        "runs": int(ms.size),
    }
