"""Peak memory and latency of an exported SCASeg on ONNX Runtime CPU: plain attention vs query-tiled (bounded).

Each measurement runs in its own subprocess, so that its peak RSS (VmHWM, Linux) is that graph's alone and not the
exporting parent's. The two graphs are measured in alternating rounds (plain, bounded, plain, bounded, ...) so that
a change of machine load hits both alike. Prints one table of medians, the bounded/plain ratios and the largest
output difference between the two graphs (tiling must change nothing but memory and rounding order). Both graphs
are also run with ONNX Runtime's memory pattern planner off (enable_mem_pattern=False), which preallocates one block
for all intermediates and so makes the peak larger than the largest live set.

Default: scaseg-t (19 classes, random weights: weights change neither memory nor speed) at 1024x2048, the Cityscapes
size, where the stage-1 attention is 131072 x 2048 per head (1 GiB of float32 per copy).

    python benchmarks/bench_export_memory.py                          # scaseg-t, 1024x2048, 2 threads, 2 rounds x 3 runs
    python benchmarks/bench_export_memory.py --quick                  # 512x1024, 4096-row tiles, 1 round: a smoke run
    python benchmarks/bench_export_memory.py --mem-pattern on         # only ONNX Runtime's default session options
    python benchmarks/bench_export_memory.py --variant scaseg-b0 --imgsz 1024x2048 --chunk 4096 --sca-op function
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from scaseg.cli import SIZE_METAVAR, size_type

CHILD = r"""
import json, sys, time
import numpy as np
from scaseg.runtime.backends.onnxruntime import make_session
from scaseg.runtime.memory import MemorySettings

def hwm_kib():
    # VmHWM is this process's own high-water mark (ru_maxrss of a forked child could carry the parent's peak).
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

path, h, w, runs, threads, save, pattern = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
sess = make_session(path, threads=threads, memory=MemorySettings(mem_pattern=pattern == "on"))
loaded = hwm_kib()
x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
name = sess.get_inputs()[0].name
out = sess.run(None, {name: x})[0]  # warm-up (allocates the arena)
times = []
for _ in range(runs):
    t = time.perf_counter(); out = sess.run(None, {name: x})[0]; times.append(time.perf_counter() - t)
peak = hwm_kib()
if save != "-":
    np.save(save, out)
print(json.dumps({"times": times, "peak_kib": peak, "loaded_kib": loaded}))
"""


def export(variant: str, size: tuple[int, int], query_chunk: object, sca_op: str, dest: Path) -> dict:
    """Export a randomly initialised ``variant`` with the given tiling; returns facts about the graph."""
    import onnx
    import torch

    import scaseg
    from scaseg.export.onnx_export import ExportOptions, to_onnx
    from scaseg.metadata import SCA_OP, ModelInfo

    torch.manual_seed(0)
    model = scaseg.build(variant, 19).eval()
    t = time.perf_counter()
    opts = ExportOptions(imgsz=size, query_chunk=query_chunk, sca_op=sca_op)  # type: ignore[arg-type]
    proto, _ = to_onnx(model, ModelInfo(variant, 19), opts)
    seconds = time.perf_counter() - t
    onnx.save(proto, str(dest))
    softmax = sum(1 for n in proto.graph.node if n.op_type == "Softmax")
    sca = sum(1 for n in proto.graph.node if n.op_type == SCA_OP)
    return {"export_s": seconds, "attention_nodes": softmax + sca, "mib": dest.stat().st_size / 2**20}


def measure(path: Path, size: tuple[int, int], runs: int, threads: int, save: str, pattern: bool) -> dict:
    """One fresh process: load ``path`` in ONNX Runtime, warm up, time ``runs`` runs, report its own peak RSS."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    args = [sys.executable, "-c", CHILD, str(path), str(size[0]), str(size[1]), str(runs), str(threads), save,
            "on" if pattern else "off"]
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench_export_memory: the ONNX Runtime run of {path.name} failed (exit {out.returncode}): {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown ISA"
    return "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--variant", default="scaseg-t")
    ap.add_argument("--imgsz", type=size_type, default=None, metavar=SIZE_METAVAR, help="default 1024x2048 (--quick: 512x1024)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per process, after one warm-up run")
    ap.add_argument("--rounds", type=int, default=2, help="alternating processes per configuration")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--chunk", default=None, help="tiling of the bounded graph: rows per tile, or auto (64 MiB tiles; "
                    "the default, --quick: 4096 rows, as auto leaves 512x1024 untiled)")
    ap.add_argument("--sca-op", default="decomposed", choices=("decomposed", "function"))
    ap.add_argument("--mem-pattern", default="both", choices=("on", "off", "both"),
                    help="ONNX Runtime's enable_mem_pattern (on is its default and what scaseg's runtime uses)")
    ap.add_argument("--quick", action="store_true", help="512x1024, 4096-row tiles, 1 round of 2 runs, memory pattern on only")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.runs = 1, 2
        args.mem_pattern = "on" if args.mem_pattern == "both" else args.mem_pattern
    args.chunk = args.chunk or ("4096" if args.quick else "auto")
    size = tuple(args.imgsz) if args.imgsz else ((512, 1024) if args.quick else (1024, 2048))
    chunk: object = args.chunk if args.chunk == "auto" else int(args.chunk)
    graphs = {"plain": None, "bounded": chunk}
    patterns = {"on": (True,), "off": (False,), "both": (True, False)}[args.mem_pattern]
    configs = [(g, p) for p in patterns for g in graphs]
    load0 = os.getloadavg()[0]
    facts: dict[str, dict] = {}
    results: dict[tuple[str, bool], dict] = {c: {"times": [], "peak": [], "loaded": []} for c in configs}
    outputs: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as d, tqdm(total=len(graphs) + len(configs) * args.rounds, desc="bench",
                                                 unit="step", file=sys.stderr) as bar:
        for g, qc in graphs.items():
            bar.set_postfix_str(f"export {g}")
            facts[g] = export(args.variant, size, qc, args.sca_op, Path(d) / f"{g}.onnx")
            bar.update()
        for r in range(args.rounds):
            for g, pattern in configs:
                bar.set_postfix_str(f"round {r + 1}: {g}, mem pattern {'on' if pattern else 'off'}")
                save = "-"
                if g not in outputs:
                    outputs[g] = Path(d) / f"{g}.npy"
                    save = str(outputs[g])
                m = measure(Path(d) / f"{g}.onnx", size, args.runs, args.threads, save, pattern)
                results[(g, pattern)]["times"] += m["times"]
                results[(g, pattern)]["peak"].append(m["peak_kib"] / 2**20)
                results[(g, pattern)]["loaded"].append(m["loaded_kib"] / 2**20)
                bar.update()
        diff = float(np.abs(np.load(outputs["plain"]) - np.load(outputs["bounded"])).max())
    load1 = os.getloadavg()[0]

    def med(c: tuple[str, bool]) -> float:
        return statistics.median(results[c]["times"])

    def peak(c: tuple[str, bool]) -> float:
        return max(results[c]["peak"])

    print(f"{args.variant} {size[0]}x{size[1]}, sca-op {args.sca_op}, bounded = --query-chunk {args.chunk}; ONNX Runtime "
          f"CPU, {args.threads} thread(s); {args.rounds} round(s) x {args.runs} runs per configuration, one process each")
    print(f"machine: {platform.machine()} {os.cpu_count()} cores ({cpu_flags()}), load average {load0:.1f} -> {load1:.1f}; "
          f"{datetime.datetime.now().isoformat(timespec='minutes')}")
    print(f"{'graph':<10}{'mem pattern':>12}{'median s':>10}{'min s':>8}{'peak RSS GiB':>14}{'(lowest)':>10}"
          f"{'RSS loaded GiB':>16}{'attn nodes':>12}{'file MiB':>10}")
    for g, pattern in configs:
        res = results[(g, pattern)]
        print(f"{g:<10}{'on' if pattern else 'off':>12}{med((g, pattern)):>10.3f}{min(res['times']):>8.3f}"
              f"{peak((g, pattern)):>14.2f}{min(res['peak']):>10.2f}{max(res['loaded']):>16.2f}{facts[g]['attention_nodes']:>12d}{facts[g]['mib']:>10.1f}")
    for pattern in patterns:
        p, b = ("plain", pattern), ("bounded", pattern)
        print(f"bounded / plain, mem pattern {'on' if pattern else 'off'}: latency x{med(b) / med(p):.2f}, "
              f"peak RSS x{peak(b) / peak(p):.2f} ({peak(p) - peak(b):.2f} GiB less)")
    print(f"max |output difference| bounded vs plain: {diff:.3g}. Peak RSS: the highest of the processes of a "
          "configuration (lowest in brackets); RSS loaded: after creating the session.")


if __name__ == "__main__":
    main()
