"""Grid strip attention under stress: how its error grows with the logit spread, and the rule for choosing G.

The grid evaluation (scaseg.models.decoder.grid_attention) is exact on G points of a = scale * q and linear between
them. Within one step of the grid the logits a * k_j of a head move by at most spread / (G - 1), with
spread = (max a - min a) * (max k - min k); the larger that is, the more the softmax can turn between two points.
This script scales the q and k projections of a model by s (spread grows as s^2) up to spreads of 100+, runs the
same synthetic scenes through exact and grid attention in PyTorch, and prints, per spread and G: the largest
|logit difference| and the share of pixels whose label agrees with exact attention. Then the largest spread / (G - 1)
at which every case kept >= 99.99% of labels, next to the rule the exporter uses (export/sca.py: SPREAD_PER_STEP).

    python benchmarks/bench_grid_accuracy.py                           # random scaseg-t, 256x512, 2 scenes, ~3 min
    python benchmarks/bench_grid_accuracy.py --checkpoint shipped      # the shipped scaseg-t-synth weights
    python benchmarks/bench_grid_accuracy.py --scales 1 8 --points 64 256 --imgsz 128x256
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import sys
import time

import numpy as np
import torch

import scaseg
from scaseg.cli import SIZE_METAVAR, size_type
from scaseg.export.parity import scene_batch
from scaseg.export.sca import SPREAD_PER_STEP, grid_points_needed, measure_spread
from scaseg.metadata import ModelInfo
from scaseg.models.decoder import StripCrossAttention, set_grid_points

TARGET = 0.9999


def scaled(model: torch.nn.Module, s: float) -> torch.nn.Module:
    """A copy of ``model`` with every strip q and k projection (weight and bias) multiplied by ``s``."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for m in out.modules():
            if isinstance(m, StripCrossAttention):
                for lin in (m.q, m.k):
                    lin.weight.mul_(s)
                    lin.bias.mul_(s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--checkpoint", default="random", help="random (scaseg-t, seed 0, 19 classes), shipped, or a path")
    ap.add_argument("--imgsz", type=size_type, default=(256, 512), metavar=SIZE_METAVAR)
    ap.add_argument("--images", type=int, default=2, help="synthetic scenes (scaseg.data.synth, seeds 0, 1, ...)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1, 2, 4, 8, 12, 16, 24])
    ap.add_argument("--points", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024])
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint == "random":
        torch.manual_seed(0)
        model, info = scaseg.build("scaseg-t", 19).eval(), ModelInfo("scaseg-t", 19)
    else:
        path = scaseg.weights_path("scaseg-t-synth") if args.checkpoint == "shipped" else args.checkpoint
        model, info = scaseg.load_model(path)
        model = model.eval()
    size = (int(args.imgsz[0]), int(args.imgsz[1]))
    x = torch.from_numpy(scene_batch(args.images, size, info))
    t0, load0 = time.time(), os.getloadavg()[0]
    rows = []
    print(f"grid strip attention vs exact: {args.checkpoint} {info.variant}, {size[0]}x{size[1]}, {args.images} synthetic "
          f"scene(s), q and k projections scaled by s; torch {torch.__version__}, {args.threads} thread(s); "
          f"{platform.machine()}, {datetime.datetime.now().isoformat(timespec='minutes')}")
    print(f"{'s':>6}{'spread':>10}{'G':>6}{'spread/(G-1)':>14}{'max |logit diff|':>18}{'labels agree %':>16}{'rule G':>8}")
    for s in args.scales:
        m = scaled(model, s)
        spread = measure_spread(m, [x[i : i + 1] for i in range(len(x))])
        with torch.no_grad():
            set_grid_points(m, None)
            exact = m(x).numpy()
            for g in args.points:
                set_grid_points(m, g)
                grid = m(x).numpy()
                err = float(np.abs(grid - exact).max())
                agree = float((grid.argmax(1) == exact.argmax(1)).mean())
                rows.append((s, spread, g, spread / (g - 1), err, agree))
                print(f"{s:>6g}{spread:>10.3g}{g:>6d}{spread / (g - 1):>14.4g}{err:>18.3g}{100 * agree:>16.4f}"
                      f"{grid_points_needed(spread):>8d}", flush=True)
    good = [r[3] for r in rows if r[5] >= TARGET]
    bad = [r[3] for r in rows if r[5] < TARGET]
    worst_ok = min(bad) if bad else float("inf")
    print(f"smallest spread/(G-1) that lost labels below {100 * TARGET:.2f}%: "
          f"{worst_ok:.4g}" + ("" if bad else " (none did)") + f"; largest that kept them: {max(good, default=0):.4g}")
    print(f"exporter rule (export/sca.py): spread/(G-1) <= SPREAD_PER_STEP = {SPREAD_PER_STEP}; "
          f"{'holds on every case above' if all(r[5] >= TARGET for r in rows if r[3] <= SPREAD_PER_STEP) else 'VIOLATED above'}")
    print(f"wall {time.time() - t0:.0f} s, load average {load0:.1f} -> {os.getloadavg()[0]:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
