"""calibration/ranges.py: statistics over batches and the minmax / percentile / entropy thresholds."""
from __future__ import annotations

import numpy as np
import pytest

from scaseg.calibration.ranges import BINS, collect_stats


def test_ranges_methods_order_on_a_heavy_tailed_tensor():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200_000).astype(np.float32)
    x[:20] = 40.0  # rare outliers
    stats = collect_stats(lambda b: {"t": b}, [x[:100_000], x[100_000:]], ["t"])
    assert stats.hist.shape == (1, BINS) and stats.hist.sum() == x.size
    mm, pc, en = (stats.thresholds(m)["t"] for m in ("minmax", "percentile", "entropy"))
    assert mm == pytest.approx(40.0)
    assert 3.0 < pc < mm and 2.0 < en < mm, (pc, en)
