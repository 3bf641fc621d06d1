"""Where ONNX Runtime CPU spends the time of fp32 / int8 / fp16 ONNX files, per op type and thread count.

    python benchmarks/profile_precision.py model.onnx model.int8.onnx [--threads 1 2] [--runs 5]

Prints one column per (file, threads): summed kernel time per run (ms) of each op type in ONNX Runtime's own
profile, for the graph it actually runs (after its QDQ fusion and layout transforms), and, per file, what that
graph contains: fused int8 kernels, and the Q/DQ pairs ONNX Runtime inserted itself (names with "token").
An op type whose time does not drop with more threads runs on one thread. Inputs: random, at the model's size.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from scaseg.runtime.backends.onnxruntime import make_session


def profile(path: str, threads: int, runs: int, work: Path) -> collections.Counter:
    sess = make_session(path, threads=threads, profile_prefix=str(work / f"{Path(path).stem}_{threads}"))
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)
    sess.run(None, {inp.name: x})
    for _ in range(runs):
        sess.run(None, {inp.name: x})
    times: collections.Counter = collections.Counter()
    with open(sess.end_profiling()) as f:
        for event in json.load(f):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                times[event["args"]["op_name"]] += event["dur"] / 1000 / (runs + 1)
    return times


def optimized_graph(path: str, work: Path) -> onnx.GraphProto:
    optimized = str(work / f"{Path(path).stem}.optimized.onnx")
    make_session(path, optimized_path=optimized)
    return onnx.load(optimized).graph


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--top", type=int, default=18)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="profile-precision-") as tmp:
        work = Path(tmp)
        cols = {(m, t): profile(m, t, args.runs, work) for m in args.models for t in args.threads}
        print(f"# onnxruntime {ort.__version__}, {os.cpu_count()} cores; kernel ms per run, mean of {args.runs}")
        names = [f"{Path(m).name} t{t}" for m, t in cols]
        print(f"| op | {' | '.join(names)} |")
        print("|---|" + "---|" * len(names))
        print("| (all kernels) | " + " | ".join(f"{sum(c.values()):.1f}" for c in cols.values()) + " |")
        ops = sorted(set().union(*cols.values()), key=lambda op: -max(c[op] for c in cols.values()))
        for op in ops[: args.top]:
            print(f"| {op} | " + " | ".join(f"{c[op]:.1f}" for c in cols.values()) + " |")
        for m in args.models:
            graph = optimized_graph(m, work)
            kinds = collections.Counter(n.op_type for n in graph.node)
            fused = {k: v for k, v in kinds.items() if k.startswith(("QLinear", "QGemm", "MatMulInteger"))}
            inserted = sum(1 for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and "token" in n.name)
            print(f"\n{Path(m).name}: {len(graph.node)} nodes as run; int8 kernels {fused or 'none'}; "
                  f"Q/DQ nodes ONNX Runtime inserted itself: {inserted}; Transposes: {kinds['Transpose']}")


if __name__ == "__main__":
    main()
