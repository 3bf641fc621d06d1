"""perf_report, measuring: what to run (the plan), the model files, interleaved timing, mIoU and peak RSS."""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from scaseg.errors import ScasegError
from scaseg.fileio import atomic_path

REPO = Path(__file__).resolve().parent.parent
# The script whose --rss-probe runs one model in a fresh process.
PROBE_SCRIPT = Path(__file__).resolve().with_name("perf_report.py")


def cpu_seconds(children: bool = False) -> float:
    """User + system CPU seconds of this process (every thread, so a library's helper threads count), or with
    ``children`` of the child processes it has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def median_wall_cpu_ms(fn: Callable[[], int], repeats: int, idle_s: float = 0.0) -> tuple[float, float]:
    """Median (wall ms, CPU ms) per item over ``repeats`` passes of ``fn``, which returns the items it handled;
    ``idle_s``: seconds per item the pass sleeps on purpose (left out of the wall time)."""
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = cpu_seconds(), time.perf_counter()
        n = fn()
        walls.append(1000 * (time.perf_counter() - t0 - n * idle_s) / n)
        cpus.append(1000 * (cpu_seconds() - c0) / n)
    return statistics.median(walls), statistics.median(cpus)


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


def interleaved(fns: dict[str, Callable[[], Any]], warmup: int, runs: int, desc: str,
                settle: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function; rounds interleaved so a change of load hits every one alike.

    In each round every function is called ``settle`` times untimed, then once timed: after a run, an ONNX Runtime
    session's pool threads spin for a while, and a run of another session timed right then shares the cores with
    them (scaseg-t at 512x512, 2 threads, fp32 and int8 sessions alternating: 147.5 and 101.9 ms per run, against
    118.7 and 77.5 ms timed after a run of the same session; 2026-12-02, 2-core Xeon).
    """
    from tqdm import tqdm

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    laps: dict[str, list[float]] = {k: [] for k in fns}
    for _ in tqdm(range(runs), desc=desc, unit="round", file=sys.stderr, leave=False):
        for key, fn in fns.items():
            for _ in range(settle):
                fn()
            t = time.perf_counter()
            fn()
            laps[key].append(time.perf_counter() - t)
    return laps


def in_blocks(sessions: dict[str, Any], x: np.ndarray, runs: int, block: int = 3,
              now: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median ms per run of each ONNX Runtime session on ``x``: one warm-up run each, then blocks of ``block`` timed
    runs, blocks interleaved across sessions, each block after one untimed run (see ``interleaved``: the previous
    session's pool threads still spin). ``now``: the clock (perf_counter, or a thread's CPU time)."""
    io = {k: (s.get_inputs()[0].name, s.get_outputs()[0].name) for k, s in sessions.items()}
    for k, s in sessions.items():
        s.run([io[k][1]], {io[k][0]: x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(max(1, -(-runs // block))):
        for k, s in sessions.items():
            s.run([io[k][1]], {io[k][0]: x})
            for _ in range(block):
                start = now()
                s.run([io[k][1]], {io[k][0]: x})
                times[k].append(now() - start)
    return {k: 1000 * float(np.median(v)) for k, v in times.items()}


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
    proc = subprocess.run([sys.executable, str(PROBE_SCRIPT), "--rss-probe", json.dumps(spec)],
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
