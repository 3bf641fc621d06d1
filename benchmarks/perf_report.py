"""Regenerate the README's performance section and docs/performance.md from measurements on this CPU.

    python benchmarks/perf_report.py --data synth --readme README.md     # default run (6 min on 2 busy cores)
    python benchmarks/perf_report.py --quick                             # small sizes, few runs (< 3 min)
    python benchmarks/perf_report.py --full --data synth                 # + 1024x2048 in the resolution sweep
    python benchmarks/perf_report.py --render-only run.json              # rewrite the outputs of a --json run

What it measures, all on this machine in one run (medians of interleaved rounds, batch 1):
1. backend x precision for scaseg-t: ONNX Runtime CPU fp32 / fp16 / int8 (Q/DQ, cpu placement) and PyTorch eager
   fp32 (reference): median latency, FPS (= 1000 / median ms), file size, achieved GFLOP/s, and mIoU with --data;
2. latency vs input resolution, strip vs vanilla attention (``scaseg.build(..., attention="vanilla")``), both
   exported to fp32 ONNX, with a PNG plot;
3. peak RSS of every configuration, each measured in a subprocess of its own (load the model, run it);
4. the CPU's peak: ONNX Runtime's GFLOP/s on a large fp32 MatMul, and the theoretical
   cores x GHz x FLOP/cycle (32 for AVX2 FMA fp32: 2 FMA pipes x 8 lanes x 2 FLOPs).

FLOPs convention: 1 MAC = 2 FLOPs. scaseg.stats counts multiply-accumulates (and labels them "GFLOPs", the
fvcore/mmseg habit); here achieved GFLOP/s = 2 x counted GMACs / median seconds. Counted ops are convolutions and
matrix products only, so the achieved figure leaves out normalisation, activations, softmax and resizing.

The model: the shipped checkpoint scaseg/weights/scaseg-t-synth.pth when present (or --checkpoint), else an
untrained scaseg-t (speed is real, mIoU is not). --data DIR: a dataset root (int8 calibration from its train split,
mIoU on its val split); --data synth: a fresh synthetic set (seed 1) written to a temporary folder.
Without --data, int8 is calibrated on a temporary synthetic set and no mIoU is reported.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from scaseg.errors import ScasegError
from scaseg.fileio import atomic_path, replace_section

REPO = Path(__file__).resolve().parent.parent
SECTION = "perf"
FLOPS_PER_CYCLE = 32  # fp32, AVX2 FMA: 2 FMA pipes x 8 lanes x 2 FLOPs (Zen 2-4, Haswell..)
SYNTH_SEED = 1  # not the recipe's seed 0: scenes the shipped checkpoint never saw


@dataclass
class Plan:
    """How much to measure: --quick, default or --full."""

    imgsz: tuple[int, int]
    sweep: list[tuple[int, int]]
    warmup: int
    runs: int
    sweep_runs: int
    probe_runs: int
    calib_num: int
    val_num: int
    matmul_n: int


def make_plan(quick: bool, full: bool, imgsz: Optional[tuple[int, int]], trained_size: Optional[tuple[int, int]]) -> Plan:
    """The sizes and repeat counts of a run."""
    if quick:
        return Plan(imgsz or (128, 256), [(128, 128), (256, 256), (384, 384)], warmup=1, runs=3, sweep_runs=3,
                    probe_runs=1, calib_num=4, val_num=4, matmul_n=1024)
    sweep = [(256, 256), (512, 512), (768, 768), (1024, 1024)] + ([(1024, 2048)] if full else [])
    return Plan(imgsz or trained_size or (256, 512), sweep, warmup=2, runs=10, sweep_runs=5, probe_runs=2,
                calib_num=16, val_num=20, matmul_n=2048)


# ----------------------------------------------------------------------------------------------- the machine


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


def nominal_peak_sentence(m: dict[str, Any], peak: float) -> str:
    """What the clock the guest reports says about the peak: no theoretical ceiling where the MatMul beats it."""
    nominal = (f"{m['cores']} cores x {m['ghz']:.2f} GHz x {m['flops_per_cycle']} FLOP/cycle = "
               f"{m['theoretical_gflops']:.0f} GFLOP/s")
    if peak > m["theoretical_gflops"]:
        return (f"No theoretical peak is quoted: the {m['ghz']:.2f} GHz the guest reports is a nominal clock the "
                f"cores run above ({nominal} is less than the MatMul measured).")
    return f"At the nominal clock the guest reports, {nominal} (a lower bound where the cores boost)."


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


def matmul_peak(n: int, threads: int, runs: int) -> dict[str, float]:
    """ONNX Runtime CPU GFLOP/s on an n x n by n x n fp32 MatMul (2 n^3 FLOPs), median of ``runs``."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
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


# ------------------------------------------------------------------------------------------- models and files


def find_checkpoint(explicit: Optional[str]) -> Optional[Path]:
    """--checkpoint, else the shipped scaseg-t-synth checkpoint if this checkout has it, else None."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ScasegError(f"checkpoint not found: {path}")
        return path
    import scaseg

    finder = getattr(scaseg, "weights_path", None)
    candidates = []
    if callable(finder):
        try:
            candidates.append(Path(finder("scaseg-t-synth")))
        except Exception:  # an older or partial install: fall back to the checkout's folder
            pass
    candidates.append(REPO / "scaseg" / "weights" / "scaseg-t-synth.pth")
    return next((p for p in candidates if p.is_file()), None)


def export_fp32(model: Any, info: Any, imgsz: tuple[int, int], dest: Path) -> Path:
    """The exporter's own function (scaseg.export.onnx_export.to_onnx): static size, onnxsim, metadata."""
    import onnx

    from scaseg.export.onnx_export import ExportOptions, to_onnx

    proto, _ = to_onnx(model, info, ExportOptions(imgsz=imgsz))
    with atomic_path(dest) as tmp:
        onnx.save(proto, str(tmp))
    return dest


def gmacs(variant: str, size: tuple[int, int], attention: str = "strip") -> float:
    """Multiply-accumulates (in G) of one image, as scaseg.stats counts them (conv + matmul)."""
    from scaseg.stats import measure

    return measure(variant, size, attention).gflops  # named "gflops" there; the values are GMACs


# ------------------------------------------------------------------------------------------------ measuring


def interleaved(fns: dict[str, Callable[[], Any]], warmup: int, runs: int, desc: str) -> dict[str, list[float]]:
    """Seconds per call of each function; rounds interleaved so a change of load hits every one alike."""
    from tqdm import tqdm

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    laps: dict[str, list[float]] = {k: [] for k in fns}
    for _ in tqdm(range(runs), desc=desc, unit="round", file=sys.stderr, leave=False):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            laps[key].append(time.perf_counter() - t)
    return laps


def _status_mb(key: str) -> float:
    """A memory line of /proc/self/status in MiB: VmRSS (now) or VmHWM (peak of this process image)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_probe(spec: dict[str, Any]) -> dict[str, float]:
    """(In the child process) open one model, run it, and report the RSS before, after loading and at peak.

    The peak is VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the forking parent.
    """
    from scaseg.runtime.backends import open_backend

    bare = _status_mb("VmRSS")
    with open_backend(spec["path"], spec["backend"], device="cpu", threads=spec["threads"]) as be:
        loaded = _status_mb("VmRSS")
        x = np.random.default_rng(0).standard_normal((1, 3, *spec["imgsz"]), dtype=np.float32)
        for _ in range(spec["runs"]):
            be.infer(x)
    return {"bare_mb": bare, "loaded_mb": loaded, "peak_mb": _status_mb("VmHWM")}


def peak_rss(path: Path, backend: str, imgsz: tuple[int, int], threads: int, runs: int) -> dict[str, float]:
    """Peak RSS of a fresh process that loads ``path`` with ``backend`` and runs it ``runs`` times."""
    spec = {"path": str(path), "backend": backend, "imgsz": list(imgsz), "threads": threads, "runs": runs}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rss-probe", json.dumps(spec)],
                          capture_output=True, text=True, cwd=str(REPO))
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise ScasegError(f"the memory probe for {path.name} ({backend}) failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass
class Row:
    """One configuration of the backend x precision table."""

    label: str
    backend: str
    precision: str
    path: Path
    threads: int
    size_mb: float = 0.0
    median_ms: float = float("nan")
    p90_ms: float = float("nan")
    miou: Optional[float] = None
    rss: dict[str, float] = field(default_factory=dict)
    note: str = ""


def backend_table(rows: list[Row], plan: Plan, threads: int, data_root: Optional[str]) -> None:
    """Time every row side by side on one input, then mIoU of each on the val split of ``data_root``."""
    from scaseg.runtime.backends import open_backend
    from scaseg.runtime.bench import evaluate, open_eval_dataset
    from scaseg.runtime.predictor import Predictor
    from scaseg.runtime.timing import summarize

    x = np.random.default_rng(0).standard_normal((1, 3, *plan.imgsz), dtype=np.float32)
    backends = {r.label: open_backend(str(r.path), r.backend, device="cpu", threads=r.threads) for r in rows}

    def call(r: Row) -> Callable[[], Any]:
        if r.backend != "torch":
            return partial(backends[r.label].infer, x)

        def run_torch() -> Any:
            import torch

            torch.set_num_threads(r.threads)  # a process-wide setting: rows with other thread counts share it
            return backends[r.label].infer(x)

        return run_torch

    try:
        laps = interleaved({r.label: call(r) for r in rows}, plan.warmup, plan.runs,
                           f"backends {plan.imgsz[0]}x{plan.imgsz[1]}")
        for r in rows:
            stats = summarize(laps[r.label])["latency_ms"]
            r.median_ms, r.p90_ms = stats["p50"], stats["p90"]
            r.size_mb = r.path.stat().st_size / 2**20
        if data_root is not None:
            scored: dict[tuple[Path, str], float] = {}
            for r in rows:
                if (r.path, r.backend) not in scored:  # a row that differs only in threads predicts the same
                    be = backends[r.label]
                    ds = open_eval_dataset(data_root, "auto", "val", be.info)
                    scored[r.path, r.backend] = 100 * evaluate(
                        Predictor(be, plan.imgsz if r.backend == "torch" else None), ds, plan.val_num)["miou"]
                r.miou = scored[r.path, r.backend]
    finally:
        for be in backends.values():
            be.close()


def sweep(variant: str, plan: Plan, threads: int, work: Path, steps: Any) -> list[dict[str, Any]]:
    """Strip vs vanilla attention, fp32 ONNX Runtime, one static export per size; latency, GMACs, peak RSS."""
    import torch

    import scaseg
    from scaseg.runtime.backends import open_backend
    from scaseg.metadata import ModelInfo
    from scaseg.runtime.timing import summarize

    results = []
    for size in plan.sweep:
        paths = {}
        for attention in ("strip", "vanilla"):
            steps.set_postfix_str(f"export {attention} {size[0]}x{size[1]}")
            torch.manual_seed(0)
            model = scaseg.build(variant, num_classes=19, attention=attention).eval()
            info = ModelInfo(variant=variant, num_classes=19, input_size=size)
            paths[attention] = export_fp32(model, info, size, work / f"{variant}-{attention}-{size[0]}x{size[1]}.onnx")
            steps.update()
        steps.set_postfix_str(f"time strip vs vanilla {size[0]}x{size[1]}")
        x = np.random.default_rng(0).standard_normal((1, 3, *size), dtype=np.float32)
        backends = {k: open_backend(str(p), "onnxruntime", device="cpu", threads=threads) for k, p in paths.items()}
        try:
            laps = interleaved({k: partial(b.infer, x) for k, b in backends.items()}, 1, plan.sweep_runs,
                               f"strip vs vanilla {size[0]}x{size[1]}")
        finally:
            for be in backends.values():
                be.close()
        steps.update()
        entry: dict[str, Any] = {"size": list(size)}
        for attention, path in paths.items():
            steps.set_postfix_str(f"peak RSS {attention} {size[0]}x{size[1]}")
            entry[attention] = {
                "median_ms": summarize(laps[attention])["latency_ms"]["p50"],
                "gmacs": gmacs(variant, size, attention),
                "rss": peak_rss(path, "onnxruntime", size, threads, plan.probe_runs),
            }
            steps.update()
            path.unlink()
        results.append(entry)
    return results


# -------------------------------------------------------------------------------------------------- output


def gflops_per_s(gmac: float, ms: float) -> float:
    """Achieved GFLOP/s with 1 MAC = 2 FLOPs."""
    return 2.0 * gmac / (ms / 1000.0)


def plot(results: list[dict[str, Any]], peak: float, dest: Path, title: str) -> None:
    """Latency and achieved GFLOP/s vs input pixels, strip vs vanilla; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mpix = [r["size"][0] * r["size"][1] / 1e6 for r in results]
    names = [f"{r['size'][0]}x{r['size'][1]}" for r in results]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for attention, style in (("strip", "o-"), ("vanilla", "s--")):
        ms = [r[attention]["median_ms"] for r in results]
        ax1.plot(mpix, ms, style, label=f"{attention} attention")
        ax2.plot(mpix, [gflops_per_s(r[attention]["gmacs"], r[attention]["median_ms"]) for r in results], style,
                 label=f"{attention} attention")
    for x, name, r in zip(mpix, names, results):
        ratio = r["vanilla"]["median_ms"] / r["strip"]["median_ms"]
        ax1.annotate(f"{name}\nvanilla/strip {ratio:.2f}x", (x, r["vanilla"]["median_ms"]), fontsize=7,
                     textcoords="offset points", xytext=(4, 4))
    ax1.set(xlabel="input megapixels", ylabel="median latency (ms)", title="latency, ONNX Runtime CPU fp32")
    ax2.axhline(peak, color="gray", lw=1, ls=":", label=f"ORT MatMul peak {peak:.0f} GFLOP/s")
    ax2.set(xlabel="input megapixels", ylabel="GFLOP/s (2 x counted MACs / latency)", title="achieved throughput",
            ylim=(0, peak * 1.1))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if ax is ax2 else "upper left")
    ax1.margins(x=0.15, y=0.12)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(str(tmp), format="png", dpi=110)
    plt.close(fig)


def _f(value: Optional[float], spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def backend_markdown(rows: list[Row], table_gmacs: float, peak: float) -> str:
    head = ("| backend | precision | threads | median ms | FPS | size (MB) | mIoU | GFLOP/s | % of MatMul peak "
            "| peak RSS (MB) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    base = rows[0].median_ms
    for r in rows:
        g = gflops_per_s(table_gmacs, r.median_ms)
        lines.append(f"| {r.backend} | {r.precision} | {r.threads} | {r.median_ms:.1f} ({base / r.median_ms:.2f}x) | "
                     f"{1000 / r.median_ms:.2f} | {r.size_mb:.1f} | {_f(r.miou, '.2f')} | {g:.1f} | "
                     f"{100 * g / peak:.0f}% | {_f(r.rss.get('peak_mb'), '.0f')} |")
    return "\n".join(lines)


def sweep_markdown(results: list[dict[str, Any]], peak: float) -> str:
    lines = ["| input | strip ms | vanilla ms | vanilla / strip | GMACs strip / vanilla | GFLOP/s strip / vanilla "
             "| % of MatMul peak (strip) | peak RSS MB strip / vanilla |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        s, v = r["strip"], r["vanilla"]
        gs, gv = gflops_per_s(s["gmacs"], s["median_ms"]), gflops_per_s(v["gmacs"], v["median_ms"])
        lines.append(f"| {r['size'][0]}x{r['size'][1]} | {s['median_ms']:.0f} | {v['median_ms']:.0f} | "
                     f"{v['median_ms'] / s['median_ms']:.2f}x | {s['gmacs']:.2f} / {v['gmacs']:.2f} | "
                     f"{gs:.1f} / {gv:.1f} | {100 * gs / peak:.0f}% | "
                     f"{s['rss']['peak_mb']:.0f} / {v['rss']['peak_mb']:.0f} |")
    return "\n".join(lines)


def render(report: dict[str, Any], rows: list[Row], plot_link: str, *, full: bool, doc_link: str = "") -> str:
    """The Markdown of the results; ``full`` adds the method, machine and caveats of docs/performance.md."""
    m, mm, plan = report["machine"], report["matmul"], report["plan"]
    peak = mm["gflops"]
    h, w = plan["imgsz"]
    model = report["model"]
    out = []
    if full:
        out += ["# Performance on a CPU", "",
                f"Generated by `{report['command']}` on {m['date']}; every figure below comes from that one run. "
                "Do not edit by hand: rerun the script.", ""]
    out += [
        f"**{model['variant']}** ({model['source']}) on **ONNX Runtime {m['onnxruntime']} CPU**, {m['cpu']} "
        f"({m['family_model']}), {m['cores']} cores, {report['threads']} threads, batch 1. "
        "Median latency of rounds interleaved across the configurations; FPS = 1000 / median ms; "
        f"(Nx) = speed relative to ONNX Runtime fp32 with {report['threads']} threads.",
        "",
        f"**Backend x precision** at {h}x{w} ({report['table_gmacs']:.2f} GMACs = "
        f"{2 * report['table_gmacs']:.2f} GFLOPs per image), median of {plan['runs']} rounds"
        + (f", mIoU (%) on {report['miou_images']} images of {report['data']}" if report["data"] else ", no mIoU (no --data)")
        + ":",
        "",
        backend_markdown(rows, report["table_gmacs"], peak),
        "",
        f"**Latency vs input resolution**, strip vs vanilla attention, fp32 ONNX Runtime (static export per size; "
        f"both randomly initialised, weights do not change the arithmetic), median of {plan['sweep_runs']} rounds:",
        "",
        f"![strip vs vanilla latency vs resolution]({plot_link})",
        "",
        sweep_markdown(report["sweep"], peak),
        "",
        f"**Peak**: ONNX Runtime fp32 MatMul {mm['n']}x{mm['n']}x{mm['n']} reaches **{peak:.1f} GFLOP/s** "
        f"(median; best {mm['best_gflops']:.1f}) with {report['threads']} threads, the ceiling the % columns use. "
        + nominal_peak_sentence(m, peak) + " "
        "GFLOP/s = 2 x counted MACs / median latency (1 MAC = 2 FLOPs; `scaseg.stats` counts MACs, convolutions "
        "and matrix products only, and calls them GFLOPs); % = share of the MatMul peak. "
        "Peak RSS: whole process (Python, libraries, model, one run), measured in a fresh subprocess per "
        "configuration.",
    ]
    if not full:
        if model["untrained"]:
            out += ["", "The model is untrained (no checkpoint was found): the speed and memory figures are real, "
                    "the mIoU column is not meaningful."]
        out += ["", f"Method, machine and caveats: [docs/performance.md]({doc_link}). A shared, noisy "
                f"{m['cores']}-core virtual machine: compare ratios within one run, not absolute numbers across runs."]
        return "\n".join(out)

    notes = [f"- {r.backend} {r.precision}: {r.note}" for r in rows if r.note]
    rss_rows = ["| configuration | bare interpreter (MB) | after loading (MB) | peak (MB) |", "|---|---|---|---|"]
    rss_rows += [f"| {r.backend} {r.precision} {r.threads} thread(s) {h}x{w} | {r.rss['bare_mb']:.0f} | {r.rss['loaded_mb']:.0f} | "
                 f"{r.rss['peak_mb']:.0f} |" for r in rows]
    for s in report["sweep"]:
        for attention in ("strip", "vanilla"):
            rss = s[attention]["rss"]
            rss_rows.append(f"| onnxruntime fp32 {attention} {s['size'][0]}x{s['size'][1]} | {rss['bare_mb']:.0f} | "
                            f"{rss['loaded_mb']:.0f} | {rss['peak_mb']:.0f} |")
    out += [
        "", "## Peak memory", "",
        f"Each configuration in a subprocess of its own: VmRSS after `import numpy` (bare), after opening the model "
        f"with `scaseg.runtime.backends.open_backend` (loaded), and VmHWM after {plan['probe_runs']} run(s) (peak).",
        "", *rss_rows,
        "", "## Notes on the configurations", "", *(notes or ["- none"]),
        "", "## Machine", "",
        f"- CPU: {m['cpu']} ({m['family_model']}), hypervisor {m['hypervisor'] or 'none reported'}, "
        f"{m['cores']} cores usable by this process ({m['threads_per_core']} thread(s) per core as the guest sees it), "
        f"{m['memory_gib']:.0f} GiB RAM, SIMD flags: {m['simd']}.",
        f"- Clock: {m['ghz']:.3f} GHz from {m['clock_source']}.",
        f"- fp32 peak at the nominal clock = cores x GHz x FLOP/cycle = {m['cores']} x {m['ghz']:.3f} x "
        f"{m['flops_per_cycle']} = {m['theoretical_gflops']:.0f} GFLOP/s, taking {m['flops_per_cycle']} FLOP/cycle "
        "for AVX2 FMA fp32 (2 FMA pipes x 8 lanes x 2 FLOPs); not a ceiling where the cores boost." + (
            " The CPU also reports AVX-512: AMD Zen 4 (family 25) executes it as two 256-bit halves, so 32 stays "
            "its fp32 figure; a core with two full 512-bit FMA units would reach 64 (pass --flops-per-cycle)."
            if "avx512f" in m["simd"] else ""),
        f"- Python {m['python']}, ONNX Runtime {m['onnxruntime']}, PyTorch {report.get('torch', '?')}; load average "
        f"(1 min) {m['load_before'][0]:.1f} before and {report['load_after'][0]:.1f} after the run.",
        f"- Wall time of the run: {report['wall_s'] / 60:.1f} min.",
        "", "## Method", "",
        f"- Model: {model['source']}. fp32 ONNX with `scaseg.export.onnx_export.to_onnx` (what `scaseg-export` "
        "runs: static shape, onnxsim, decomposed strip attention, query tiling `auto`); fp16 and int8 with "
        f"`scaseg.calibration.api.make_precision` (int8: Q/DQ placement `cpu`, {plan['calib_num']} calibration "
        "images, accuracy guard <= 1 mIoU point on held-out images); PyTorch eager runs the checkpoint through "
        "`scaseg.runtime.backends.torch` (inference_mode).",
        f"- Timing: every configuration of a table is opened once, warmed up, then timed in interleaved rounds "
        f"(A, B, C, D, A, B, ...) on the same random input; the median per configuration is reported, "
        f"`scaseg.runtime.timing.summarize`. {report['threads']} intra-op threads for ONNX Runtime and PyTorch, "
        "plus 1-thread rows of ONNX Runtime fp32 and PyTorch (PyTorch's thread count is process-wide: it is set "
        "before each of its calls). "
        "Model-only: no decoding, preprocessing or argmax (scaseg-bench reports end-to-end figures).",
        "- mIoU: `scaseg.runtime.bench.evaluate` (the scaseg-bench code), labels at full resolution, "
        + (f"{report['miou_images']} images of {report['data']}." if report["data"] else "not measured (no --data)."),
        "- Achieved GFLOP/s: 2 x MACs from `scaseg.stats.measure` (meta-device count of convolutions and matrix "
        "products) / median latency. For int8 and fp16 it is the fp32-equivalent rate. The MatMul peak is what "
        "ONNX Runtime's own fp32 GEMM reaches on this machine with the same threads, a practical ceiling.",
        "", "## Caveats", "",
        f"- A shared, noisy {m['cores']}-core virtual machine: other jobs ran at the same time (load averages above). "
        "Medians and interleaving make the ratios within one table trustworthy; absolute figures move between runs.",
        "- The cores are virtual CPUs; the host may run them as hyper-threads of one physical core, and the clock "
        "the guest reports is nominal: boost clocks above it are invisible to the guest, so a large MatMul can "
        "exceed the nominal-clock figure (this run's did, see Peak). The MatMul rate is the ceiling that counts.",
        "- ONNX Runtime CPU has few fp16 kernels: an fp16 model mostly runs through casts, so fp16 is a GPU "
        "format; int8 speed depends on VNNI support and on how much of the graph the Q/DQ placement covers.",
        *_thread_caveat(rows),
        "- PyTorch eager runs its ops on OpenMP threads that meet at a barrier after every op; when other jobs "
        "keep the cores busy, one of the threads is often descheduled and each small op waits for it. Compare its "
        "row with all threads against its 1-thread row: the gap is the price of a busy machine, not of the model.",
        "- Vanilla and strip differ only in the decoder's four cross-attention modules; the encoder dominates the "
        "cost of scaseg-t, so the end-to-end gap is smaller than the attention-only saving in `scaseg.stats`.",
    ]
    if model["untrained"]:
        out.append("- The model is untrained (no checkpoint found): speed figures are real, mIoU figures are not.")
    return "\n".join(out) + "\n"


def _thread_caveat(rows: list[Row]) -> list[str]:
    """A caveat line when this run's 1-thread rows beat the all-threads rows of the same model (a busy machine)."""
    faster = [f"{one.backend} {one.precision} {one.median_ms:.0f} ms with 1 thread vs {many.median_ms:.0f} ms with "
              f"{many.threads}" for one in rows if one.threads == 1
              for many in rows if many.threads > 1 and (many.path, many.backend) == (one.path, one.backend)
              and one.median_ms < many.median_ms]
    if not faster:
        return []
    return [f"- In this run fewer threads were faster ({'; '.join(faster)}): other jobs held the cores, so a second "
            "thread mostly waited; rerun on an idle machine for what the extra threads can give."]


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and few runs (< 3 min)")
    ap.add_argument("--full", action="store_true", help="add 1024x2048 to the resolution sweep")
    ap.add_argument("--data", default=None, help="dataset root for calibration and mIoU, or 'synth'")
    ap.add_argument("--checkpoint", default=None, help="scaseg-t checkpoint (default: the shipped one if present)")
    ap.add_argument("--variant", default="scaseg-t", help="variant when no checkpoint is used")
    ap.add_argument("--imgsz", nargs=2, type=int, default=None, metavar=("H", "W"),
                    help="backend-table input size (default: the checkpoint's, else 256 512)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: usable cores)")
    ap.add_argument("--readme", default="README.md", help="file whose perf markers get the section ('' = none)")
    ap.add_argument("--doc", default="docs/performance.md", help="full report (Markdown)")
    ap.add_argument("--plot", default="docs/perf_strip_vs_vanilla.png", help="PNG of the resolution sweep")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--flops-per-cycle", type=int, default=FLOPS_PER_CYCLE, help="fp32 FLOP/cycle/core for the peak")
    ap.add_argument("--render-only", default=None, metavar="JSON",
                    help="write the outputs again from a --json of an earlier run, measuring nothing")
    ap.add_argument("--rss-probe", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _path(text: str) -> Path:
    """An output path as given on the command line (relative ones from the current folder)."""
    return Path(text).expanduser().absolute()


def _check(args: argparse.Namespace) -> None:
    if args.quick and args.full:
        raise ScasegError("--quick and --full contradict each other: pick one")
    if args.data not in (None, "synth") and not Path(args.data).expanduser().is_dir():
        raise ScasegError(f"dataset folder not found: {args.data} (or pass --data synth)")
    if args.threads is not None and args.threads < 1:
        raise ScasegError(f"--threads must be at least 1, got {args.threads}")
    if args.imgsz is not None and min(args.imgsz) < 32:
        raise ScasegError(f"--imgsz must be at least 32 32, got {args.imgsz[0]} {args.imgsz[1]}")
    for opt in ("doc", "plot"):
        parent = _path(getattr(args, opt)).parent
        if not parent.is_dir():
            raise ScasegError(f"the folder of --{opt} {getattr(args, opt)} does not exist")


def run(args: argparse.Namespace) -> None:
    import torch
    from tqdm import tqdm

    import scaseg
    from scaseg.calibration.api import make_precision

    _check(args)
    t0 = time.time()
    ckpt = find_checkpoint(args.checkpoint)
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="perf-report-") as tmp:
        work = Path(tmp)
        if ckpt is not None:
            model, info = scaseg.load_model(ckpt)
            source, untrained = f"checkpoint `{ckpt.relative_to(REPO) if ckpt.is_relative_to(REPO) else ckpt}`", False
        else:
            torch.manual_seed(0)
            model = scaseg.build(args.variant, num_classes=19).eval()
            from scaseg.metadata import ModelInfo

            info = ModelInfo(variant=args.variant, num_classes=19)
            source, untrained = "untrained, random weights (seed 0)", True
            print(f"perf_report: no checkpoint found: {args.variant} is untrained, its mIoU means nothing",
                  file=sys.stderr)
        plan = make_plan(args.quick, args.full, tuple(args.imgsz) if args.imgsz else None,
                         tuple(info.input_size) if info.input_size else None)
        info = info.replace(input_size=plan.imgsz)
        steps_total = 8 + 5 * len(plan.sweep)
        bar = "{l_bar}{bar}| {n}/{total} [{elapsed}<{remaining}]"
        with tqdm(total=steps_total, desc="perf report", unit="step", file=sys.stderr, bar_format=bar) as steps:
            steps.set_postfix_str("machine and MatMul peak")
            machine = machine_info(args.flops_per_cycle)
            matmul = matmul_peak(plan.matmul_n, threads, 10)
            steps.update()

            steps.set_postfix_str("data")
            data_root = args.data
            if args.data in (None, "synth"):
                from scaseg.data.synth import write_dataset

                data_root = str(work / "synth")
                total = plan.calib_num + plan.val_num
                write_dataset(data_root, num=total, seed=SYNTH_SEED, size=plan.imgsz, val_fraction=plan.val_num / total,
                              video_frames=0, progress=False)
            miou_root = data_root if args.data is not None else None
            steps.update()

            steps.set_postfix_str(f"export fp32 {plan.imgsz[0]}x{plan.imgsz[1]}")
            if ckpt is None:
                ckpt = work / f"{args.variant}.pth"
                scaseg.save_checkpoint(model, ckpt, input_size=plan.imgsz)
            fp32 = export_fp32(model, info, plan.imgsz, work / "model.onnx")
            steps.update()
            rows = [Row("ort-fp32", "onnxruntime", "fp32", fp32, threads)]
            for prec in ("fp16", "int8"):
                steps.set_postfix_str(f"make_precision {prec}")
                out = work / f"model.{prec}.onnx"
                summary = make_precision(str(fp32), str(out), prec, calib_dir=data_root, calib_num=plan.calib_num,
                                         method="minmax", target="cpu")
                note = (f"kept in float: {summary.get('kept_float_blocks')}; guard mIoU fp32 {summary.get('miou_fp32')} "
                        f"-> int8 {summary.get('miou_int8')} on held-out images; quantized {summary.get('quantized_ops')}"
                        if prec == "int8" else
                        f"max |logit error| {summary.get('max_abs_error')}, argmax agreement "
                        f"{summary.get('argmax_agreement')}, ops kept fp32: {summary.get('kept_fp32_ops')}")
                rows.append(Row(f"ort-{prec}", "onnxruntime", prec, out, threads, note=note))
                steps.update()
            torch_note = "eager, inference_mode; size = the checkpoint file"
            rows.append(Row("torch-fp32", "torch", "fp32", ckpt, threads, note=torch_note))
            if threads > 1:
                rows.append(Row("ort-fp32-1t", "onnxruntime", "fp32", fp32, 1))
                rows.append(Row("torch-fp32-1t", "torch", "fp32", ckpt, 1))

            steps.set_postfix_str("backend x precision")
            backend_table(rows, plan, threads, miou_root)
            steps.update()
            steps.set_postfix_str("peak RSS per backend")
            for r in rows:
                r.rss = peak_rss(r.path, r.backend, plan.imgsz, r.threads, plan.probe_runs)
            steps.update()

            results = sweep(info.variant, plan, threads, work, steps)

            steps.set_postfix_str("writing")
            report = {
                "command": "python benchmarks/perf_report.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                "machine": machine, "matmul": matmul, "threads": threads, "torch": torch.__version__,
                "plan": {**plan.__dict__, "imgsz": list(plan.imgsz), "sweep": [list(s) for s in plan.sweep]},
                "model": {"variant": info.variant, "source": source, "untrained": untrained},
                "table_gmacs": gmacs(info.variant, plan.imgsz),
                "data": (f"a synthetic set (seed {SYNTH_SEED}, val split)" if args.data == "synth" else args.data),
                "miou_images": plan.val_num if miou_root else 0,
                "backends": [{**r.__dict__, "path": r.path.name} for r in rows],
                "sweep": results, "load_after": os.getloadavg(), "wall_s": time.time() - t0,
            }
            write_outputs(report, rows, args)
            steps.update()


# Sections of docs/performance.md that another script regenerates (between its <!-- NAME:start/end --> markers,
# with the heading above them): kept as they are when this script rewrites the page.
OTHER_SECTIONS = ("grid-scaling",)  # benchmarks/bench_grid_scaling.py


def _owned_elsewhere(doc: Path) -> str:
    """The OTHER_SECTIONS of the current ``doc`` (heading line through end marker), to append to a rewrite."""
    try:
        old = doc.read_text(encoding="utf-8")
    except OSError:
        return ""
    kept = []
    for name in OTHER_SECTIONS:
        i, j = old.find(f"<!-- {name}:start -->"), old.find(f"<!-- {name}:end -->")
        if 0 <= i < j:
            head = old.rfind("\n## ", 0, i)
            kept.append(old[head + 1 if head >= 0 else i : j + len(f"<!-- {name}:end -->")])
    return "".join("\n" + k + "\n" for k in kept)


def write_outputs(report: dict[str, Any], rows: list[Row], args: argparse.Namespace) -> None:
    """The PNG, docs/performance.md, the README section (or the section printed when the markers are missing)."""
    doc, png = _path(args.doc), _path(args.plot)
    sizes = " / ".join(f"{s[0]}x{s[1]}" for s in report["plan"]["sweep"])
    plot(report["sweep"], report["matmul"]["gflops"], png,
         f"{report['model']['variant']}, ONNX Runtime CPU fp32, {report['machine']['cpu']}, "
         f"{report['threads']} threads ({sizes}); {report['machine']['date']}")
    text = render(report, rows, os.path.relpath(png, doc.parent), full=True) + _owned_elsewhere(doc)
    with atomic_path(doc) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(f"wrote {doc} and {png}", file=sys.stderr)
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    if args.readme:
        readme = _path(args.readme)
        section = render(report, rows, os.path.relpath(png, readme.parent), full=False,
                         doc_link=os.path.relpath(doc, readme.parent))
        try:
            replace_section(readme, SECTION, section)
            print(f"updated the performance section of {args.readme}", file=sys.stderr)
        except ScasegError as exc:
            print(f"perf_report: {exc}; the section is printed below instead", file=sys.stderr)
            print(section)
    else:
        print(render(report, rows, os.path.relpath(png), full=False, doc_link=os.path.relpath(doc)))


def render_only(args: argparse.Namespace) -> None:
    """The outputs of an earlier run (its --json), rendered with this version of the templates."""
    _check(args)
    try:
        report = json.loads(Path(args.render_only).expanduser().read_text(encoding="utf-8"))
        rows = [Row(**{**r, "path": Path(r["path"])}) for r in report["backends"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ScasegError(f"{args.render_only} is not a --json written by this script ({exc})") from None
    write_outputs(report, rows, args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.rss_probe is not None:
        print(json.dumps(rss_probe(json.loads(args.rss_probe))))
        return 0
    try:
        if args.render_only:
            render_only(args)
        else:
            run(args)
    except ScasegError as exc:
        print(f"perf_report: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("perf_report: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
