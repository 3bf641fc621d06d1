"""ONNX Runtime CPU session settings side by side: latency of the first and later runs, and peak RSS, per setting.

Each configuration runs in a child process of its own (VmHWM is that process's own peak), in --rounds rounds
whose order rotates, and the table shows medians over the rounds. The configurations are
scaseg.runtime.memory.MemorySettings (ONNX Runtime's CPU memory arena, its memory pattern, glibc's mmap
and trim thresholds): the three --memory modes of scaseg-bench / scaseg-infer and the steps between them. The last rows run
the real command, ``scaseg-bench MODEL --memory fast|lean|minimal``, once each,, and report its ``peak_rss_mb``: the figure the
issue's target (<= 1.0 GiB for scaseg-t at 1024x2048) is about.

    python benchmarks/bench_cpu_memory.py --model scaseg-t-1024x2048.onnx --threads 2 --doc docs/performance.md

The model: ``scaseg-export scaseg/weights/scaseg-t-synth.pth --imgsz 1024x2048 -o scaseg-t-1024x2048.onnx``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from scaseg.runtime.memory import MEMORY_MODES, MemorySettings

REPO = Path(__file__).resolve().parent.parent
SECTION = "cpu-memory"
MIB = 1 << 20
# name -> MemorySettings (ONNX Runtime's arena and memory pattern, glibc's mmap and trim thresholds);
# "fast", "lean" and "minimal" are the --memory modes.
CONFIGS: dict[str, MemorySettings] = {
    "fast (ORT defaults, malloc keeps freed blocks)": MEMORY_MODES["fast"],
    "ORT defaults, glibc's malloc defaults": MemorySettings(),
    "lean (memory pattern off)": MEMORY_MODES["lean"],
    "arena off, pattern off": MemorySettings(cpu_arena=False, mem_pattern=False),
    "minimal (arena off, pattern off, malloc 1 MiB)": MEMORY_MODES["minimal"],
}
MODES = ("fast", "lean", "minimal")


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """(In the child) open the model with these settings, run it, and report times and memory."""
    from scaseg.data.synth import render_scene
    from scaseg.runtime import memory
    from scaseg.runtime.backends import open_backend
    from scaseg.runtime.predictor import Predictor

    settings = memory.MemorySettings(**spec["settings"])
    t0 = time.perf_counter()
    backend = open_backend(spec["model"], "onnxruntime", device="cpu", threads=spec["threads"], memory=settings)
    load_s = time.perf_counter() - t0
    loaded = memory.rss_mb()
    predictor = Predictor(backend)
    image, _ = render_scene(0, tuple(predictor.size or (512, 512)))
    x, _ = predictor.prepare(image)
    batch = np.ascontiguousarray(x[None])
    laps = []
    for _ in range(spec["runs"] + 1):
        t0 = time.perf_counter()
        backend.infer(batch)
        laps.append(time.perf_counter() - t0)
    e2e = []
    for _ in range(spec["e2e_runs"]):
        t0 = time.perf_counter()
        predictor(image)
        e2e.append(time.perf_counter() - t0)
    return {"load_s": load_s, "first_ms": 1000 * laps[0], "later_ms": 1000 * statistics.median(laps[1:]),
            "e2e_ms": 1000 * statistics.median(e2e) if e2e else None, "loaded_mb": loaded,
            "peak_mb": memory.peak_rss_mb()}


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env, cwd=str(REPO), timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"bench_cpu_memory: the child for {spec['name']} failed: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_bench(model: str, mode: str, threads: int, runs: int) -> dict[str, Any]:
    """``scaseg-bench MODEL --memory MODE``, as a user runs it; its JSON record."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, "-c", "from scaseg.runtime.bench import main; main()", model, "--memory", mode,
               "--threads", str(threads), "--device", "cpu", "--warmup", "1", "-n", str(runs), "-q", "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=900,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        if proc.returncode != 0:
            raise SystemExit(f"bench_cpu_memory: scaseg-bench --memory {mode} failed: {proc.stderr.strip()[-400:]}")
        return json.loads(out.read_text())["models"][0]


def versions() -> str:
    import onnxruntime

    from perf_machine import machine_info

    cpu = machine_info()["cpu"]
    libc = " ".join(platform.libc_ver())
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores; Linux {platform.release()}, {libc}; Python "
            f"{platform.python_version()}, ONNX Runtime {onnxruntime.__version__}, numpy {np.__version__}")


def render(model: str, size: Any, threads: int, rounds: int, runs: int, rows: dict[str, list[dict[str, Any]]],
           bench: dict[str, list[dict[str, Any]]], load: tuple[float, float]) -> str:
    med = lambda xs: statistics.median(xs)  # noqa: E731
    base = med([r["later_ms"] for r in rows[next(iter(CONFIGS))]])
    lines = [
        f"`python benchmarks/bench_cpu_memory.py --model {Path(model).name} --threads {threads} --rounds {rounds} "
        f"--runs {runs}` on {time.strftime('%Y-%m-%d %H:%M')} (load average {load[0]:.2f} before, {load[1]:.2f} after); "
        f"{versions()}.",
        "",
        f"scaseg-t (shipped scaseg-t-synth) at {size[0]}x{size[1]}, ONNX Runtime CPU, {threads} threads, one child "
        f"process per configuration and round; medians over {rounds} rounds. First run: the first `infer` after "
        f"loading; later runs: median of the next {runs}; end to end: `Predictor` on a synthetic scene "
        "(preprocess, infer, argmax, resize back); peak: the child's VmHWM at the end.",
        "",
        "| configuration | load s | first run ms | later runs ms | vs fast | end to end ms | RSS loaded MB | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, results in rows.items():
        later = med([r["later_ms"] for r in results])
        e2e = [r["e2e_ms"] for r in results if r["e2e_ms"] is not None]
        lines.append(f"| {name} | {med([r['load_s'] for r in results]):.2f} | {med([r['first_ms'] for r in results]):.0f} "
                     f"| {later:.0f} | {base / later:.2f}x | {med(e2e):.0f} | "
                     f"{med([r['loaded_mb'] for r in results]):.0f} | {med([r['peak_mb'] for r in results]):.0f} |")
    lines += ["", "Through the command itself, once per mode (`scaseg-bench MODEL --memory MODE --threads "
              f"{threads} --device cpu --warmup 1 -n {runs}`; its `peak_rss_mb`, which includes the end-to-end "
              "timing on a 720x1280 JPEG):", "",
              "| scaseg-bench | ms/img (mean) | E2E ms/img (mean) | peak_rss_mb | GiB |", "|---|---|---|---|---|"]
    for mode, records in bench.items():
        peak = med([r["peak_rss_mb"] for r in records])
        lines.append(f"| --memory {mode} | {med([r['latency_ms']['mean'] for r in records]):.0f} | "
                     f"{med([r['end_to_end']['latency_ms']['mean'] for r in records]):.0f} | {peak:.0f} | "
                     f"{peak / 1024:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", help="a static scaseg-t .onnx (e.g. exported at 1024x2048)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="child processes per configuration")
    ap.add_argument("--runs", type=int, default=4, help="timed runs after the first, per child")
    ap.add_argument("--e2e-runs", type=int, default=2, help="end-to-end runs per child")
    ap.add_argument("--doc", type=Path, help=f"replace the '{SECTION}' section of this markdown file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if not args.model or not Path(args.model).is_file():
        raise SystemExit("bench_cpu_memory: --model PATH.onnx is needed (see the docstring for the export command)")
    from scaseg.runtime.backends import open_backend

    with open_backend(args.model, "onnxruntime", device="cpu") as be:
        size = be.fixed_size or be.info.input_size
    load_before = os.getloadavg()[0]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    bench: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    names = list(CONFIGS)
    for rnd in range(args.rounds):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:  # rotate the order each round
            spec = {"name": name, "model": args.model, "threads": args.threads, "settings": dataclasses.asdict(CONFIGS[name]),
                    "runs": args.runs, "e2e_runs": args.e2e_runs}
            rows[name].append(run_child(spec))
            r = rows[name][-1]
            print(f"round {rnd + 1} {name}: first {r['first_ms']:.0f} ms, later {r['later_ms']:.0f} ms, "
                  f"peak {r['peak_mb']:.0f} MB", file=sys.stderr)
    for mode in MODES:  # once: the peak is what these rows are for (the table above has the timing)
        bench[mode].append(run_bench(args.model, mode, args.threads, args.runs))
        print(f"scaseg-bench --memory {mode}: peak {bench[mode][-1]['peak_rss_mb']:.0f} MB", file=sys.stderr)
    text = render(args.model, size, args.threads, args.rounds, args.runs, rows, bench, (load_before, os.getloadavg()[0]))
    print(text)
    if args.doc:
        from scaseg.readme import replace_section

        replace_section(args.doc, SECTION, text)


if __name__ == "__main__":
    main()
