"""The frame path's own operations at camera resolution, one at a time: wall and CPU time per call.

What scaseg-infer does to each frame besides decode, the model and encode (docs/runtime.md). A frame read by OpenCV:
BGR -> RGB after the decoder, the resize to the network's input, the overlay (scaseg.runtime.overlay.render_overlay:
colour mask scaled up with scaseg.runtime.preprocess.resize_nearest, blend, legend drawn in place), RGB -> I420
before the encoder. A frame given as the decoder's I420 planes (an H.264 file): preprocess_planes and
render_overlay_planes, and nothing before the encoder. The choices made for them, each against what it replaced:
- the planes' two operations against the RGB path's four (the same network input and picture, tests/runtime);
- resize_nearest against ``cv2.resize(..., INTER_NEAREST)`` (the same pixels, checked here);
- OpenCV with one thread per call (what the pipeline sets while it runs) against OpenCV's default (a thread per
  core), with the other cores idle and with them busy (one spinning process per other core, as the model and the
  codecs keep them in a run). CPU time is the process's user + system time, so OpenCV's helper threads count.

Each figure is the median over --repeats passes of the mean of --calls calls (a 2 ms pause between calls, as
frames arrive, not counted in wall time).

    python benchmarks/bench_frame_ops.py                      # 1080p
    python benchmarks/bench_frame_ops.py --sizes 1080p 2160p --repeats 7
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from typing import Callable, Iterator, Optional

import cv2
import numpy as np

from perf_machine import machine_line
from perf_measure import median_wall_cpu_ms

SIZES = {"720p": (720, 1280), "1080p": (1080, 1920), "2160p": (2160, 3840)}
NET_HW = (192, 384)  # the shipped model's input
PAUSE_S = 0.002


def timed(fn: Callable[[], object], calls: int, repeats: int) -> tuple[float, float]:
    """Median (wall ms, CPU ms) per call of ``fn``, after one untimed call; a pause of PAUSE_S between calls."""
    fn()

    def calls_with_pauses() -> int:
        for _ in range(calls):
            fn()
            time.sleep(PAUSE_S)
        return calls
    return median_wall_cpu_ms(calls_with_pauses, repeats, idle_s=PAUSE_S)


@contextlib.contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """``count`` processes spinning on other cores while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.2)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def operations(hw: tuple[int, int]) -> dict[str, Callable[[], object]]:
    """The per-frame operations on one synthetic frame of size ``hw``, with labels at the network's size."""
    from scaseg.data.synth import render_video
    from scaseg.metadata import default_palette
    from scaseg.data.video import I420
    from scaseg.metadata import IMAGENET_MEAN, IMAGENET_STD
    from scaseg.runtime.overlay import blend, colorize, palette_lut, palette_planes, render_overlay, render_overlay_planes
    from scaseg.runtime.preprocess import preprocess, preprocess_planes, resize_nearest

    rgb, label = next(iter(render_video(0, 1, hw)))
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    labels = cv2.resize(label.astype(np.uint8), NET_HW[::-1], interpolation=cv2.INTER_NEAREST)
    lut = palette_lut(default_palette(19))
    names = [f"class {i}" for i in range(19)]
    mask = colorize(labels, lut)
    h, w = hw
    full_mask = resize_nearest(mask, hw)
    planes, table = I420.from_rgb(rgb), palette_planes(lut)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if not np.array_equal(full_mask, cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)):
        raise SystemExit("resize_nearest differs from cv2.resize INTER_NEAREST")
    return {
        "BGR -> RGB (after decode)": lambda: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
        "resize to the network (linear)": lambda: cv2.resize(rgb, NET_HW[::-1], interpolation=cv2.INTER_LINEAR),
        "mask up: cv2.resize nearest (before)": lambda: cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST),
        "mask up: resize_nearest (used)": lambda: resize_nearest(mask, hw),
        "blend (cv2.addWeighted)": lambda: blend(rgb, full_mask, 0.5),
        "render_overlay with legend (all of it)": lambda: render_overlay(rgb, labels, lut, 0.5, names),
        "RGB -> I420 (before encode)": lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420),
        "input from BGR: to RGB, preprocess": lambda: preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), NET_HW, mean,
                                                                std),
        "input from planes: preprocess_planes": lambda: preprocess_planes(planes, NET_HW, mean, std),
        "overlay to planes from RGB (before)": lambda: I420.from_rgb(render_overlay(rgb, labels, lut, 0.5)),
        "overlay in planes: render_overlay_planes": lambda: render_overlay_planes(planes, labels, table, 0.5),
    }


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["1080p"], choices=list(SIZES), help="frame sizes")
    ap.add_argument("--calls", type=int, default=50, help="calls per pass")
    ap.add_argument("--repeats", type=int, default=5, help="passes per figure (median)")
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    default_threads = cv2.getNumThreads()
    print(machine_line())
    print(f"opencv {cv2.__version__}; OpenCV threads: 1 (the pipeline's) or {default_threads} (OpenCV's default); "
          f"'busy': {cores - 1} spinning process(es) on the other core(s); median of {args.repeats} x {args.calls} "
          "calls")
    for size in args.sizes:
        ops = operations(SIZES[size])
        columns = [f"{n} thread{'s' if n > 1 else ''}, {load}" for n in (1, default_threads) for load in ("idle", "busy")]
        print(f"{size}, per call: wall ms / CPU ms")
        print((f"  {'':40s}" + "".join(f"{c:<19s}" for c in columns)).rstrip())
        rows: dict[str, list[tuple[float, float]]] = {name: [] for name in ops}
        for threads in (1, default_threads):
            cv2.setNumThreads(threads)
            for busy in (False, True):
                with busy_cores(cores - 1 if busy else 0):
                    for name, fn in ops.items():
                        rows[name].append(timed(fn, args.calls, args.repeats))
        cv2.setNumThreads(default_threads)
        for name, cells in rows.items():
            print(f"  {name:40s}" + "    ".join(f"{wall:6.2f} / {cpu:6.2f}" for wall, cpu in cells))


if __name__ == "__main__":
    main()
