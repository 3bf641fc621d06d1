"""Scaling study: exact (decomposed), grid and vanilla attention from 256x256 to 2048x4096 on ONNX Runtime CPU.

Latency (median) and peak RSS of each configuration, each in a fresh subprocess (VmHWM is that process's own peak),
with the shipped scaseg-t-synth checkpoint (exact and grid; vanilla is a randomly initialised scaseg-t with vanilla
attention: its q/k shapes differ, and weights change neither speed nor memory). Then the fitted exponent of each
latency curve (latency ~ pixels^b), the grid vs exact speedup per size, and the label agreement of grid vs exact on
the same synthetic street scene. Exports: scaseg.export.onnx_export.to_onnx, as scaseg-export writes them (exact and
vanilla with --query-chunk auto, grid with the G the exporter's rule picks from the spread measured on the scene);
no parity check (at 2048x4096 the exact PyTorch reference alone would need several GiB).

Resumable and splittable, because a timed run must hold the exclusive CPU lock for less than 4 minutes: results go
to --work (default /tmp/scaseg-grid-scaling/results.json), one entry per (mode, size), and --phase picks the step.

    python benchmarks/bench_grid_scaling.py --phase export                      # all exports (shared lock)
    flock -x -w 900 /tmp/scaseg-cpu.lock python benchmarks/bench_grid_scaling.py --phase time --sizes 1024x2048
    flock -x -w 900 /tmp/scaseg-cpu.lock python benchmarks/bench_grid_scaling.py --phase time --sizes 2048x4096 --modes exact
    python benchmarks/bench_grid_scaling.py --phase report --plot docs/perf_grid_scaling.png --doc docs/performance.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODES = ("exact", "grid", "vanilla")
SIZES = ("256x256", "512x512", "512x1024", "1024x1024", "1024x2048", "2048x4096")
SECTION = "grid-scaling"
BIG = 1024 * 2048  # from this many pixels on, 3 timed runs per process instead of 5


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(path: Path, results: dict[str, Any]) -> None:
    from scaseg.fileio import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


def scene(size: tuple[int, int], info: Any, work: Path) -> Path:
    """Synthetic street scene (seed 0) at ``size``, preprocessed as the runtime does, cached as .npy."""
    from scaseg.export.parity import scene_batch

    path = work / f"scene_{size[0]}x{size[1]}.npy"
    if not path.exists():
        np.save(path, scene_batch(1, size, info))
    return path


def export(mode: str, size: tuple[int, int], work: Path, results: dict[str, Any]) -> None:
    """Write work/MODE_HxW.onnx (skipped when present) and record its facts in ``results``."""
    import onnx
    import torch

    import scaseg
    from scaseg.export.onnx_export import ExportOptions, to_onnx
    from scaseg.export.parity import plan_grid
    from scaseg.metadata import ModelInfo

    key = f"{mode}_{size[0]}x{size[1]}"
    dest = work / f"{key}.onnx"
    if dest.exists() and key in results:
        return
    if mode == "vanilla":
        torch.manual_seed(0)
        model, info = scaseg.build("scaseg-t", 19, attention="vanilla").eval(), ModelInfo("scaseg-t", 19)
    else:
        model, info = scaseg.load_model(scaseg.weights_path("scaseg-t-synth"))
        model = model.eval()
    opts = ExportOptions(imgsz=size, sca_op="grid" if mode == "grid" else "decomposed")
    facts: dict[str, Any] = {"mode": mode, "size": list(size)}
    t = time.perf_counter()
    if mode == "grid":
        opts.grid_points, facts["spread"] = plan_grid(model, info, size, 1)
        facts["grid_points"] = opts.grid_points
    proto, _ = to_onnx(model, info, opts)
    onnx.save(proto, str(dest))
    scene(size, info, work)
    facts["export_s"] = time.perf_counter() - t
    results[key] = {**results.get(key, {}), **facts}


CHILD_SPEC = "--child"


def child(spec: dict[str, Any]) -> None:
    """(In the subprocess) open one ONNX file, warm up, time the runs, save the labels, print times and peak RSS."""
    from scaseg.runtime.backends.onnxruntime import make_session

    def status_kib(key: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

    sess = make_session(spec["path"], threads=spec["threads"])
    loaded = status_kib("VmRSS")
    x = np.load(spec["input"])
    out = sess.run(None, {"images": x})[0]  # warm-up
    times = []
    for _ in range(spec["runs"]):
        t = time.perf_counter()
        out = sess.run(None, {"images": x})[0]
        times.append(time.perf_counter() - t)
    np.save(spec["labels"], out.argmax(axis=1).astype(np.uint8))
    print(json.dumps({"times": times, "peak_kib": status_kib("VmHWM"), "loaded_kib": loaded}))


def time_one(mode: str, size: tuple[int, int], work: Path, threads: int, runs: int) -> dict[str, Any]:
    key = f"{mode}_{size[0]}x{size[1]}"
    spec = {"path": str(work / f"{key}.onnx"), "input": str(work / f"scene_{size[0]}x{size[1]}.npy"),
            "labels": str(work / f"{key}.labels.npy"), "threads": threads, "runs": runs}
    if not Path(spec["path"]).exists():
        raise SystemExit(f"bench_grid_scaling: {spec['path']} is missing: run --phase export first")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), CHILD_SPEC, json.dumps(spec)],
                          capture_output=True, text=True, env=env, cwd=str(REPO))
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench_grid_scaling: the run of {key} failed (exit {proc.returncode}): {tail}")
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"times": m["times"], "median_s": statistics.median(m["times"]), "peak_mib": m["peak_kib"] / 1024,
            "loaded_mib": m["loaded_kib"] / 1024, "threads": threads, "runs": runs, "load_before": load,
            "timed_at": datetime.datetime.now().isoformat(timespec="minutes")}


def fit_exponent(points: list[tuple[float, float]]) -> float:
    """b of latency ~ pixels^b, least squares in log-log."""
    if len(points) < 2:
        return float("nan")
    x = np.log([p for p, _ in points])
    y = np.log([t for _, t in points])
    return float(np.polyfit(x, y, 1)[0])


def report(results: dict[str, Any], work: Path, sizes: list[tuple[int, int]], plot: Optional[Path],
           doc: Optional[Path]) -> str:
    import onnxruntime
    import torch

    lines = []
    timed = [s for s in sizes if any("median_s" in results.get(f"{m}_{s[0]}x{s[1]}", {}) for m in MODES)]
    first = next((results[k] for k in results if "timed_at" in results[k]), {})
    lines.append(f"scaseg-t (shipped scaseg-t-synth for exact and grid, random weights for vanilla), ONNX Runtime "
                 f"{onnxruntime.__version__} CPU, {first.get('threads', 2)} threads, batch 1, one synthetic scene per "
                 f"size; torch {torch.__version__} for the exports; {platform.machine()} {os.cpu_count()} cores")
    lines.append("")
    lines.append("| input | exact s | grid s (G) | vanilla s | grid / exact speedup | peak RSS MiB exact / grid / vanilla "
                 "| labels grid = exact | spread |")
    lines.append("|---|---|---|---|---|---|---|---|")
    curves: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    rss: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    for s in timed:
        tag = f"{s[0]}x{s[1]}"
        r = {m: results.get(f"{m}_{tag}", {}) for m in MODES}
        for m in MODES:
            if "median_s" in r[m]:
                curves[m].append((s[0] * s[1], r[m]["median_s"]))
                rss[m].append((s[0] * s[1], r[m]["peak_mib"]))
        agree = ""
        ex, gr = work / f"exact_{tag}.labels.npy", work / f"grid_{tag}.labels.npy"
        if ex.exists() and gr.exists():
            agree = f"{100 * float((np.load(ex) == np.load(gr)).mean()):.4f}%"

        def sec(m: str) -> str:
            return f"{r[m]['median_s']:.3f}" if "median_s" in r[m] else "-"

        speed = (f"{r['exact']['median_s'] / r['grid']['median_s']:.2f}x"
                 if "median_s" in r["exact"] and "median_s" in r["grid"] else "-")
        mem = " / ".join(f"{r[m]['peak_mib']:.0f}" if "peak_mib" in r[m] else "-" for m in MODES)
        g = f" ({r['grid'].get('grid_points', '?')})" if "median_s" in r["grid"] else ""
        spread = f"{r['grid']['spread']:.3g}" if "spread" in r["grid"] else "-"
        lines.append(f"| {tag} | {sec('exact')} | {sec('grid')}{g} | {sec('vanilla')} | {speed} | {mem} | {agree} | {spread} |")
    lines.append("")
    fits = []
    for m in MODES:
        if len(curves[m]) >= 2:
            upper = curves[m][-3:]
            fits.append(f"{m} {fit_exponent(curves[m]):.2f} (largest three sizes: {fit_exponent(upper):.2f})")
    lines.append("Fitted exponent b of latency ~ pixels^b, all sizes: " + "; ".join(fits) + ".")
    stamps = sorted({results[k]["timed_at"] for k in results if "timed_at" in results[k]})
    loads = [results[k]["load_before"] for k in results if "load_before" in results[k]]
    runs = sorted({results[k]["runs"] for k in results if "runs" in results[k]})
    if stamps:
        lines.append(f"Timed {stamps[0]} to {stamps[-1]}; load average before the runs {min(loads):.1f} to {max(loads):.1f}; "
                     f"median of {' or '.join(map(str, runs))} timed runs per process, after one warm-up run.")
    text = "\n".join(lines)
    if plot is not None:
        _plot(curves, rss, plot)
    if doc is not None:
        from scaseg.readme import replace_section

        link = os.path.relpath(plot, doc.parent) if plot is not None else None
        body = (f"![latency and peak RSS vs pixels, exact / grid / vanilla]({link})\n\n" if link else "") + text
        replace_section(doc, SECTION, body)
    return text


def _plot(curves: dict[str, list[tuple[float, float]]], rss: dict[str, list[tuple[float, float]]], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for m, style in zip(MODES, ("o-", "s-", "^--")):
        if curves[m]:
            px = [p / 1e6 for p, _ in curves[m]]
            ax1.loglog(px, [t for _, t in curves[m]], style, label=f"{m} (b = {fit_exponent(curves[m]):.2f})")
            ax2.loglog(px, [r / 1024 for _, r in rss[m]], style, label=m)
    ax1.set(xlabel="megapixels", ylabel="median latency (s)", title="latency, ONNX Runtime CPU, 2 threads")
    ax2.set(xlabel="megapixels", ylabel="peak RSS (GiB)", title="peak RSS (one process per configuration)")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(dest, dpi=110)
    plt.close(fig)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == CHILD_SPEC:
        child(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--phase", choices=("export", "time", "report", "all"), default="all")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), help=f"HxW (default: {' '.join(SIZES)})")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=None, help="timed runs per process (default 5, 3 from 1024x2048 on)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/scaseg-grid-scaling"))
    ap.add_argument("--plot", type=Path, default=None, help="write the PNG here (report phase)")
    ap.add_argument("--doc", type=Path, default=None, help=f"replace the '{SECTION}' section of this markdown file")
    args = ap.parse_args()
    from scaseg.cli import parse_size

    sizes = [parse_size(s, "--sizes") for s in args.sizes]
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / "results.json"
    if args.phase in ("export", "all"):
        import torch

        torch.set_num_threads(args.threads)
        for s in sizes:
            for m in args.modes:
                results = load_results(store)
                print(f"export {m} {s[0]}x{s[1]}", file=sys.stderr, flush=True)
                export(m, s, args.work, results)
                save_results(store, results)
    if args.phase in ("time", "all"):
        for s in sizes:
            for m in args.modes:
                runs = args.runs or (3 if s[0] * s[1] >= BIG else 5)
                measured = time_one(m, s, args.work, args.threads, runs)
                results = load_results(store)
                results[f"{m}_{s[0]}x{s[1]}"].update(measured)
                save_results(store, results)
                print(f"{m} {s[0]}x{s[1]}: median {measured['median_s']:.3f} s, peak RSS {measured['peak_mib']:.0f} MiB",
                      file=sys.stderr, flush=True)
    if args.phase in ("report", "all"):
        print(report(load_results(store), args.work, sizes, args.plot, args.doc))


if __name__ == "__main__":
    main()
