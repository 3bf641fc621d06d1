"""perf_report, the machine: CPU model, cores, clock, SIMD flags, the theoretical fp32 peak and ONNX Runtime's
MatMul peak (the figures the report divides by)."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

FLOPS_PER_CYCLE = 32  # fp32, AVX2 FMA: 2 FMA pipes x 8 lanes x 2 FLOPs (Zen 2-4, Haswell..)


def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n")[0]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines()) if v}


def machine_info(flops_per_cycle: int = FLOPS_PER_CYCLE) -> dict[str, Any]:
    """CPU model, cores this process may use, clock and its source, SIMD flags, theoretical fp32 peak."""
    lscpu, cpuinfo = _lscpu(), _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if lscpu.get("CPU max MHz"):
        mhz, source = float(lscpu["CPU max MHz"]), "lscpu 'CPU max MHz'"
    elif cpuinfo.get("cpu MHz"):
        mhz, source = float(cpuinfo["cpu MHz"]), "/proc/cpuinfo 'cpu MHz' (as the kernel reports it; boost unknown)"
    else:
        mhz, source = float("nan"), "unknown"
    flags = set((lscpu.get("Flags") or cpuinfo.get("flags") or "").split())
    ghz = mhz / 1000.0
    import onnxruntime

    return {
        "cpu": lscpu.get("Model name") or cpuinfo.get("model name") or platform.processor() or "unknown",
        "family_model": f"family {lscpu.get('CPU family', cpuinfo.get('cpu family', '?'))} "
                        f"model {lscpu.get('Model', cpuinfo.get('model', '?'))}",
        "hypervisor": lscpu.get("Hypervisor vendor"),
        "cores": cores,
        "threads_per_core": lscpu.get("Thread(s) per core"),
        "ghz": ghz,
        "clock_source": source,
        "simd": " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni") if f in flags) or "none found",
        "flops_per_cycle": flops_per_cycle,
        "theoretical_gflops": cores * ghz * flops_per_cycle,
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "load_before": os.getloadavg(),
    }


def machine_line() -> str:
    """One line for a benchmark's header: date, CPU and its SIMD, usable cores, load, Python, ONNX Runtime, numpy."""
    m = machine_info()
    return (f"{m['date']} {m['cpu']} ({m['simd']}), {m['cores']} cores usable, load {m['load_before'][0]:.2f}; "
            f"python {m['python']}, onnxruntime {m['onnxruntime']}, numpy {np.__version__}")


def matmul_peak(n: int, threads: int, runs: int) -> dict[str, float]:
    """ONNX Runtime CPU GFLOP/s on an n x n by n x n fp32 MatMul (2 n^3 FLOPs), median of ``runs``."""
    from onnx import TensorProto, helper

    from scaseg.runtime.backends.onnxruntime import make_session

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = make_session(model.SerializeToString(), threads=threads)
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    sess.run(None, feed)
    laps = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        laps.append(time.perf_counter() - t)
    med = float(np.median(laps))
    return {"n": n, "median_ms": 1000 * med, "gflops": 2 * n**3 / med / 1e9, "best_gflops": 2 * n**3 / min(laps) / 1e9}
