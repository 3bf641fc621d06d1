"""Latency of an exported SCASeg on ONNX Runtime CPU vs PyTorch eager vs torch.compile, and the GFLOP/s achieved.

Same model (random weights, 19 classes: weights do not change speed), same input, same thread count (2 by default,
set for ONNX Runtime's intra-op pool and for torch), measured in one run. The backends take turns in interleaved
rounds (the order rotates each round) so that a change of machine load hits them alike; figures are medians of all
timed runs after a warm-up. torch.compile (inductor, default mode) is the stronger PyTorch baseline; its compile time
is reported, and if it cannot compile here the table says so and the rest still runs.

GFLOP/s: the model's multiply-accumulates come from scaseg.stats (which counts MACs as "FLOPs", the fvcore/mmseg
convention, and only convolutions and matrix products); achieved GFLOP/s = 2 x MACs / latency. It is set next to
ONNX Runtime's own rate on one large fp32 MatMul (2048 x 2048 x 2048 by default, 2 x n^3 FLOPs) on this machine,
timed in the same rounds, the practical ceiling for dense fp32 work here.

Control rows (on unless --no-control): ONNX Runtime and eager with one thread. On a machine other jobs keep busy,
torch's OpenMP threads meet at a barrier after every op and one of them is often descheduled, which can slow eager
several-fold; if eager with one thread beats eager with two, the 2-thread ratios measure the machine, not the model.

    python benchmarks/bench_export_speed.py                        # scaseg-t and scaseg-b0 at 512x512, 2 threads
    python benchmarks/bench_export_speed.py --quick                # fewer rounds and runs
    python benchmarks/bench_export_speed.py --variants scaseg-t --imgsz 1024 --no-compile
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from tqdm import tqdm

from scaseg.cli import SIZE_METAVAR, size_type

from bench_export_memory import cpu_flags  # a sibling script: benchmarks/ is on sys.path when run as a script




def ort_session(path_or_bytes: Any, threads: int) -> Any:
    from scaseg.runtime.backends.onnxruntime import make_session

    return make_session(path_or_bytes, threads=threads)


def matmul_runner(n: int, threads: int) -> Callable[[], Any]:
    """ONNX Runtime running Y = A @ B for n x n fp32 A (input) and B (initializer)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "B")
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["Y"])], "matmul",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])], initializer=[b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    sess = ort_session(model.SerializeToString(), threads)
    a = rng.standard_normal((n, n)).astype(np.float32)
    return lambda: sess.run(None, {"A": a})


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def bench_variant(variant: str, size: tuple[int, int], threads: int, rounds: int, runs: int, compile_model: bool,
                  control: bool, matmul: Callable[[], Any], matmul_times: list[float], folder: Path, bar: tqdm) -> dict:
    import onnx
    import torch

    import scaseg
    from scaseg.export.onnx_export import ExportOptions, to_onnx
    from scaseg.metadata import ModelInfo
    from scaseg.stats import measure

    torch.manual_seed(0)
    model = scaseg.build(variant, 19).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32))
    bar.set_postfix_str(f"{variant}: export")
    proto, _ = to_onnx(model, ModelInfo(variant, 19), ExportOptions(imgsz=size))
    path = folder / f"{variant}.onnx"
    onnx.save(proto, str(path))
    feed = {"images": x.numpy()}

    def ort_runner(n: int) -> Callable[[], Any]:
        sess = ort_session(str(path), n)
        return lambda: sess.run(None, feed)[0]

    def eager() -> Any:
        with torch.inference_mode():
            return model(x)

    # name -> (callable or None when unavailable, torch threads to set around its runs, threads shown)
    backends: dict[str, tuple[Optional[Callable[[], Any]], int, int]] = {
        "onnxruntime": (ort_runner(threads), threads, threads), "eager": (eager, threads, threads)}
    notes: dict[str, str] = {}
    outputs: dict[str, np.ndarray] = {}
    bar.set_postfix_str(f"{variant}: warm-up")
    outputs["onnxruntime"] = np.asarray(backends["onnxruntime"][0]())  # type: ignore[misc]
    outputs["eager"] = eager().numpy()
    if compile_model:
        bar.set_postfix_str(f"{variant}: torch.compile (minutes on 2 cores)")
        try:
            torch._dynamo.reset()
            compiled = torch.compile(model)

            def run_compiled() -> Any:
                with torch.inference_mode():
                    return compiled(x)

            t = time.perf_counter()
            outputs["torch.compile"] = run_compiled().numpy()
            notes["torch.compile"] = f"first call (compile) {time.perf_counter() - t:.0f} s, on-disk inductor cache allowed"
            backends["torch.compile"] = (run_compiled, threads, threads)
        except Exception as exc:  # report and go on: the other backends still answer the question
            notes["torch.compile"] = f"failed: {one_line(exc)}"
            backends["torch.compile"] = (None, threads, threads)
    else:
        notes["torch.compile"] = "skipped (--no-compile)"
        backends["torch.compile"] = (None, threads, threads)
    if control and threads != 1:
        backends["onnxruntime 1t"] = (ort_runner(1), threads, 1)
        backends["eager 1t"] = (eager, 1, 1)
    for name, (fn, n, _) in backends.items():  # second warm-up: first-call allocations and kernel selection are done
        if fn is not None:
            torch.set_num_threads(n)
            fn()
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {name: [] for name, (fn, _, _) in backends.items() if fn is not None}
    order = list(times) + ["matmul"]
    for r in range(rounds):
        bar.set_postfix_str(f"{variant}: round {r + 1}/{rounds}")
        k = r % len(order)
        for name in order[k:] + order[:k]:
            fn, n = (matmul, threads) if name == "matmul" else backends[name][:2]
            torch.set_num_threads(n)  # outside the timed calls: torch's thread count is process-wide
            for _ in range(runs):
                t = time.perf_counter()
                fn()  # type: ignore[misc]
                (matmul_times if name == "matmul" else times[name]).append(time.perf_counter() - t)
            torch.set_num_threads(threads)
        bar.update()
    ref = outputs["eager"]
    diffs = {name: float(np.abs(out - ref).max()) for name, out in outputs.items() if name != "eager"}
    return {"variant": variant, "gmacs": measure(variant, size).gflops, "times": times, "notes": notes, "diffs": diffs,
            "threads": {name: shown for name, (_, _, shown) in backends.items()}, "order": list(backends)}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["scaseg-t", "scaseg-b0"])
    ap.add_argument("--imgsz", type=size_type, default=(512, 512), metavar=SIZE_METAVAR)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of ONNX Runtime and torch")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (backend order rotates each round)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per backend per round")
    ap.add_argument("--matmul", type=int, default=2048, help="n of the n x n x n MatMul reference")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    ap.add_argument("--no-control", dest="control", action="store_false",
                    help="skip the 1-thread rows of ONNX Runtime and eager (the check for a busy machine)")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 runs")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.runs = 2, 2

    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    size = (int(args.imgsz[0]), int(args.imgsz[1]))
    load0 = os.getloadavg()[0]
    matmul = matmul_runner(args.matmul, args.threads)
    matmul()
    matmul_times: list[float] = []
    results = []
    with tempfile.TemporaryDirectory() as d, tqdm(total=len(args.variants) * args.rounds, desc="bench", unit="round",
                                                 file=sys.stderr) as bar:
        for variant in args.variants:
            results.append(bench_variant(variant, size, args.threads, args.rounds, args.runs, args.compile, args.control,
                                         matmul, matmul_times, Path(d), bar))
    load1 = os.getloadavg()[0]
    mm_s = statistics.median(matmul_times)
    mm_rate = 2 * args.matmul**3 / mm_s / 1e9

    import onnxruntime

    print(f"{size[0]}x{size[1]}, batch 1, fp32, {args.threads} threads (ONNX Runtime intra-op and torch), "
          f"{args.rounds} interleaved rounds x {args.runs} runs, medians")
    print(f"machine: {platform.machine()} {os.cpu_count()} cores ({cpu_flags()}), load average {load0:.1f} -> {load1:.1f}; "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; {datetime.datetime.now().isoformat(timespec='minutes')}")
    print(f"ONNX Runtime MatMul {args.matmul}^3 fp32: {mm_s * 1e3:.1f} ms -> {mm_rate:.1f} GFLOP/s "
          f"(median of {len(matmul_times)}; 2 FLOPs per MAC)")
    head = (f"{'variant':<11}{'backend':<15}{'threads':>8}{'median ms':>10}{'min ms':>9}{'vs ORT':>8}{'GFLOP/s':>9}"
            f"{'% MatMul':>10}  notes")
    print(head)
    for res in results:
        flops = 2 * res["gmacs"] * 1e9
        for name in res["order"]:
            ts = res["times"].get(name)
            n = res["threads"][name]
            ort_med = statistics.median(res["times"]["onnxruntime" if n == args.threads else "onnxruntime 1t"])
            note = res["notes"].get(name, "")
            if name in res["diffs"]:
                note = "; ".join(filter(None, [note, f"max |diff| vs eager {res['diffs'][name]:.2g}"]))
            if not ts:
                print(f"{res['variant']:<11}{name:<15}{n:>8}{'-':>10}{'-':>9}{'-':>8}{'-':>9}{'-':>10}  {note}")
                continue
            med = statistics.median(ts)
            rate = flops / med / 1e9
            print(f"{res['variant']:<11}{name:<15}{n:>8}{med * 1e3:>10.1f}{min(ts) * 1e3:>9.1f}{med / ort_med:>7.2f}x"
                  f"{rate:>9.1f}{100 * rate / mm_rate:>9.1f}%  {note}")
    print("vs ORT: latency / ONNX Runtime latency at the same thread count (above 1: ONNX Runtime is faster). "
          "1t rows: one thread, a check on the 2-thread rows (on a busy machine torch's OpenMP threads wait for each "
          "other after every op; ONNX Runtime's pool suffers less). "
          f"% MatMul: of the {args.threads}-thread MatMul rate. GFLOP/s = 2 x GMACs / latency with "
          "GMACs from scaseg.stats (convolutions and matrix products only): "
          + ", ".join(f"{r['variant']} {r['gmacs']:.2f} GMACs" for r in results) + ".")


if __name__ == "__main__":
    main()
