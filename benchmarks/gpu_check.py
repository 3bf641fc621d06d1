"""One table of what runs on a lent GPU machine: PyTorch CUDA latency/FPS, the plugin's CuPy math, ORT/TensorRT where present.

    python benchmarks/gpu_check.py                 # the whole check, < 8 minutes on one GPU
    python benchmarks/gpu_check.py --quick         # 512x512 only, fewer runs

Written for the GPU machine this project is sometimes lent (PyTorch with CUDA, CuPy, cuda-bindings, a CPU
onnxruntime; nothing can be fetched there). Rows:

- PyTorch CUDA: scaseg-t and scaseg-b0 at 512x512 and 1024x2048, fp32 and fp16 (autocast), median latency and FPS
  over timed runs after warm-up (random weights: speed does not depend on them);
- exact vs grid strip attention, where the model accepts a grid option (tried, not assumed: a model without it
  gives a "not available" row);
- the strip-attention plugin's math (runtime/tensorrt/plugin.py) on CuPy against numpy, max |difference|;
- ONNX Runtime CUDA and a TensorRT engine run, only where onnxruntime-gpu / TensorRT import there.

Without a CUDA GPU it prints one sentence and exits 0. Not yet run: no GPU has been lent to this project.
"""
from __future__ import annotations

import argparse
import importlib
import platform
import statistics
import sys
import time
from typing import Any, Callable, Optional

import numpy as np

SIZES = {"512x512": (512, 512), "1024x2048": (1024, 2048)}
VARIANTS = ("scaseg-t", "scaseg-b0")
DEADLINE_S = 7.5 * 60


def _optional(name: str) -> Optional[Any]:
    try:
        return importlib.import_module(name)
    except Exception:  # absent or broken: the row says "not present"
        return None


def _time(fn: Callable[[], Any], sync: Callable[[], None], warmup: int, runs: int) -> float:
    """Median seconds of ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, setting: str, value: str, note: str = "") -> None:
        self.rows.append((what, setting, value, note))
        print(f"  {what} | {setting} | {value} | {note}", file=sys.stderr, flush=True)

    def show(self) -> None:
        print("| check | setting | result | note |\n|---|---|---|---|")
        for row in self.rows:
            print("| " + " | ".join(row) + " |")


def _torch_rows(torch: Any, table: Table, sizes: list[str], warmup: int, runs: int, start: float) -> None:
    import scaseg

    sync = torch.cuda.synchronize
    for variant in VARIANTS:
        model = scaseg.build(variant, 19).eval().cuda()
        for size in sizes:
            h, w = SIZES[size]
            x = torch.randn(1, 3, h, w, device="cuda")
            for precision in ("fp32", "fp16"):
                if time.perf_counter() - start > DEADLINE_S:
                    table.add(f"PyTorch CUDA {variant}", f"{size} {precision}", "skipped", "time budget spent")
                    continue

                def run(model: Any = model, x: Any = x, precision: str = precision) -> Any:
                    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16,
                                                                enabled=precision == "fp16"):
                        return model(x)

                try:
                    seconds = _time(run, sync, warmup, runs)
                    table.add(f"PyTorch CUDA {variant}", f"{size} {precision}",
                              f"{seconds * 1e3:.2f} ms, {1 / seconds:.1f} FPS", f"median of {runs}")
                except RuntimeError as exc:  # out of memory and the like: a row, not a crash
                    table.add(f"PyTorch CUDA {variant}", f"{size} {precision}", "failed", str(exc).splitlines()[0])
                    torch.cuda.empty_cache()
        _grid_rows(torch, scaseg, variant, table, warmup, runs)
        del model
        torch.cuda.empty_cache()


def _grid_rows(torch: Any, scaseg: Any, variant: str, table: Table, warmup: int, runs: int) -> None:
    """Exact vs grid strip attention at 1024x2048, if this model can be built with a grid option."""
    try:
        grid = scaseg.build(variant, 19, grid=True).eval().cuda()
    except TypeError:
        table.add(f"grid strip attention {variant}", "1024x2048 fp16", "not available",
                  "this model has no grid option")
        return
    exact = scaseg.build(variant, 19).eval().cuda()
    grid.load_state_dict(exact.state_dict(), strict=False)
    x = torch.randn(1, 3, *SIZES["1024x2048"], device="cuda")
    results = {}
    for name, model in (("exact", exact), ("grid", grid)):
        def run(model: Any = model) -> Any:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                return model(x)

        results[name] = _time(run, torch.cuda.synchronize, warmup, runs)
    table.add(f"grid vs exact strip attention {variant}", "1024x2048 fp16",
              f"exact {results['exact'] * 1e3:.2f} ms, grid {results['grid'] * 1e3:.2f} ms",
              f"grid/exact {results['grid'] / results['exact']:.2f}x")


def _cupy_row(table: Table) -> None:
    cupy = _optional("cupy")
    if cupy is None:
        table.add("plugin math on CuPy", "-", "not present", "CuPy does not import")
        return
    from scaseg.runtime.tensorrt.plugin import strip_attention_into

    rng = np.random.default_rng(0)
    q = rng.normal(size=(1, 2, 4096, 32)).astype(np.float32)
    k = rng.normal(size=(1, 2, 256, 32)).astype(np.float32)
    v = rng.normal(size=(1, 2, 256, 64)).astype(np.float32)
    ref = np.zeros((1, 2, 4096, 64), np.float32)
    strip_attention_into(np, q, k, v, 0.176, ref)
    for dtype in (np.float32, np.float16):
        out = cupy.zeros(ref.shape, dtype)
        strip_attention_into(cupy, cupy.asarray(q.astype(dtype)), cupy.asarray(k.astype(dtype)),
                             cupy.asarray(v.astype(dtype)), 0.176, out)
        diff = float(np.abs(cupy.asnumpy(out).astype(np.float32) - ref).max())
        table.add("plugin math CuPy vs numpy", np.dtype(dtype).name, f"max |diff| {diff:.2e}",
                  "q 4096x32, k/v 256 keys, 2 heads")


def _ort_row(table: Table, warmup: int, runs: int) -> None:
    ort = _optional("onnxruntime")
    if ort is None or "CUDAExecutionProvider" not in ort.get_available_providers():
        table.add("ONNX Runtime CUDA", "-", "not present", "onnxruntime-gpu is not installed here")
        return
    import tempfile

    import onnx
    import torch

    import scaseg
    from scaseg.export.onnx_export import ExportOptions, to_onnx
    from scaseg.metadata import ModelInfo
    from scaseg.runtime.backends.onnxruntime import make_session

    model = scaseg.build("scaseg-t", 19).eval()
    proto, _ = to_onnx(model, ModelInfo("scaseg-t", 19, input_size=(512, 512)), ExportOptions(imgsz=(512, 512)))
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/m.onnx"
        onnx.save(proto, path)
        session = make_session(path, providers=["CUDAExecutionProvider"])
        x = np.random.default_rng(0).normal(size=(1, 3, 512, 512)).astype(np.float32)
        name = session.get_inputs()[0].name
        seconds = _time(lambda: session.run(None, {name: x}), lambda: None, warmup, runs)
    table.add("ONNX Runtime CUDA scaseg-t", "512x512 fp32", f"{seconds * 1e3:.2f} ms, {1 / seconds:.1f} FPS",
              f"median of {runs}, host copies included; torch {torch.__version__}")


def _tensorrt_row(table: Table) -> None:
    from scaseg.runtime.tensorrt import installed

    trt = installed.find_tensorrt()
    if trt is None:
        table.add("TensorRT engine", "-", "not present", "neither tensorrt nor tensorrt_rtx imports here")
        return
    table.add("TensorRT engine", trt.label, "present", "build with scaseg-export MODEL.onnx --format engine, "
              "then scaseg-bench MODEL.engine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="512x512 only, fewer runs")
    args = ap.parse_args()
    torch = _optional("torch")
    if torch is None or not torch.cuda.is_available():
        print("No CUDA GPU here (PyTorch sees none), so there is nothing to measure; run this on the GPU machine.")
        return
    start = time.perf_counter()
    sizes = ["512x512"] if args.quick else list(SIZES)
    warmup, runs = (3, 10) if args.quick else (10, 30)
    print(f"machine: {platform.platform()}; GPU {torch.cuda.get_device_name(0)}; torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}); python {platform.python_version()}", flush=True)
    table = Table()
    torch.backends.cudnn.benchmark = True
    _torch_rows(torch, table, sizes, warmup, runs, start)
    _cupy_row(table)
    _ort_row(table, warmup, runs)
    _tensorrt_row(table)
    table.show()
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
