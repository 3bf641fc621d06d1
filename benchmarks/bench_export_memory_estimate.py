"""Peak memory of scaseg-export, measured, against export.memory's estimate (the formula the refusal uses).

Each export runs in a fresh process (its own peak RSS, from wait4's ru_maxrss), with --parity-images 1 and
a randomly initialised checkpoint (weights change neither memory nor the graph). Prints one row per size:
measured peak, estimate, estimate / measured. The constants in export/memory.py come from these rows.

    python benchmarks/bench_export_memory_estimate.py                           # scaseg-t at 128..512x1024
    python benchmarks/bench_export_memory_estimate.py --variant scaseg-b0 --sizes 256x256 512x512
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path


def measure(ckpt: Path, h: int, w: int, out: Path) -> tuple[int, float]:
    """Peak RSS (bytes) and wall seconds of one export in a fresh process."""
    import time

    env = {**os.environ, "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "scaseg.export.cli", str(ckpt), "--imgsz", f"{h}x{w}",
                             "--parity-images", "1", "-o", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"export at {h}x{w} failed: {err.strip()}")
    return usage.ru_maxrss * 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="scaseg-t")
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--sizes", nargs="+", default=["128x128", "256x256", "256x512", "512x1024"])
    args = parser.parse_args()

    import torch

    import scaseg
    from scaseg.export.memory import GiB, available_bytes, estimate_for_model

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}; available now {(available_bytes() or 0) / GiB:.1f} GiB")
    model = scaseg.build(args.variant, args.classes)
    print(f"{'variant':<10} {'input':>9} {'measured GiB':>12} {'estimate GiB':>12} {'est/meas':>8} {'wall s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "m.pth"
        for size in args.sizes:
            h, w = (int(v) for v in size.lower().split("x"))
            scaseg.save_checkpoint(model, ckpt, input_size=(h, w))
            peak, seconds = measure(ckpt, h, w, Path(tmp) / "m.onnx")
            est = estimate_for_model(model, scaseg.VARIANTS[args.variant], args.classes, (h, w), 1)
            print(f"{args.variant:<10} {size:>9} {peak / GiB:>12.2f} {est / GiB:>12.2f} {est / peak:>8.2f} {seconds:>7.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
