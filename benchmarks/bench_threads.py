"""1 thread vs every core on ONNX Runtime CPU, per input size: the measurement behind ``--threads auto``.

    scaseg-export scaseg/weights/scaseg-t-synth.pth -o /tmp/t-dyn.onnx --dynamic spatial
    /work/coord/cpu-exclusive python benchmarks/bench_threads.py /tmp/t-dyn.onnx [more.onnx] \
        [--sizes 128x256 256x512 512x512 512x1024] [--runs 21]

For each model and size (a static model runs at its own size only): an ONNX Runtime session with 1 thread and
one with every core (and any --threads given), timed side by side (one warm-up run each, then interleaved
blocks of 3 runs, median of --runs), the faster count, and what ``--threads auto`` (runtime/backends/threads.py)
ends with at that size (timed at load, or every core), with the cost of that against the faster one. Machine and versions are printed first.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from scaseg.cli import parse_size
from scaseg.runtime.backends import threads as rule
from scaseg.runtime.backends.onnxruntime import make_session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_machine import machine_line  # noqa: E402
from perf_measure import in_blocks  # noqa: E402  (the same interleaved timing)


def session(path: str, threads: int) -> ort.InferenceSession:
    return make_session(path, threads=threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--sizes", nargs="+", default=["128x256", "256x512", "512x512", "512x1024"])
    ap.add_argument("--threads", nargs="+", type=int, default=None, help="counts to compare (default: 1 and every core)")
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    cores = rule.cpu_cores()
    counts = sorted(set(args.threads or [1, cores]))
    print(f"# {machine_line()}; median of {args.runs} runs, interleaved blocks of 3")
    print(f"# --threads auto: up to {rule.PROBE_MAX_PIXELS} px per call both counts are timed at load and the faster "
          f"kept; above, {rule.auto_threads()} threads")
    print("| model | input | px | " + " | ".join(f"{t} thr ms" for t in counts) + " | faster | auto picks | auto vs faster |")
    print("|---|---|---|" + "---|" * len(counts) + "---|---|---|")
    for path in args.models:
        probe = session(path, 1).get_inputs()[0]
        static = [d for d in probe.shape[2:] if isinstance(d, int)]
        sizes = [tuple(probe.shape[2:])] if len(static) == 2 else [parse_size(s) for s in args.sizes]
        for h, w in sizes:  # type: ignore[misc]
            x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
            ms = in_blocks({t: session(path, t) for t in counts}, x, args.runs)  # type: ignore[arg-type]
            best = min(ms, key=ms.get)  # type: ignore[arg-type]
            pick = best if h * w <= rule.PROBE_MAX_PIXELS else rule.auto_threads(cores=cores)
            cost = ms[pick] / ms[best] if pick in ms else float("nan")
            print(f"| {Path(path).name} | {h}x{w} | {h * w} | " + " | ".join(f"{ms[t]:.1f}" for t in counts)
                  + f" | {best} | {pick} | {cost:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
