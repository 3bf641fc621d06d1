"""The CPU paths side by side: ONNX Runtime fp32 / int8 and OpenVINO fp32 / bf16 / int8, scaseg-t at 512x512.

One process, every configuration opened with scaseg.runtime.backends.open_backend (what ``scaseg-bench --backend``
runs), timed in interleaved rounds on the same preprocessed synthetic scene (medians, ratios vs ONNX Runtime fp32),
then scored on the val split of a synthetic set through scaseg.runtime.bench.evaluate (the mIoU scaseg-bench
reports) with the label agreement of each configuration against ONNX Runtime fp32 on the same images.
OpenVINO bf16 runs only where the CPU has bf16 arithmetic; its row says so otherwise. An int8 file OpenVINO
cannot compile gets a row with the reason.

    python benchmarks/bench_cpu_backends.py --prepare            # exports and data (slow; shared CPU lock)
    python benchmarks/bench_cpu_backends.py --threads 2 --doc docs/performance.md --readme README.md   # timed

The files (in --work): ``scaseg-export scaseg/weights/scaseg-t-synth.pth --imgsz 512x512``, the same with
``--precision int8 --calib data --calib-num 32 --int8-target cpu`` and ``--int8-target tensorrt``, and
``scaseg-synth data --num 200 --seed 1 --size 256x512 --video-frames 0`` (its val split: 40 scenes).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SECTION = "cpu-backends"
CHECKPOINT = REPO / "scaseg" / "weights" / "scaseg-t-synth.pth"
FILES = {"fp32": "scaseg-t-512.onnx", "int8 cpu": "scaseg-t-512.int8-cpu.onnx",
         "int8 tensorrt": "scaseg-t-512.int8-tensorrt.onnx"}
# (label, file key, --backend name)
CONFIGS = [
    ("ORT fp32", "fp32", "onnxruntime"),
    ("ORT int8 (cpu placement)", "int8 cpu", "onnxruntime"),
    ("OpenVINO fp32", "fp32", "openvino"),
    ("OpenVINO bf16", "fp32", "openvino:bf16"),
    ("OpenVINO int8 (cpu placement)", "int8 cpu", "openvino"),
    ("OpenVINO int8 (tensorrt placement)", "int8 tensorrt", "openvino"),
]
TARGET_SPEEDUP, TARGET_DROP = 2.0, 0.5


def _cli(args: list[str]) -> None:
    print("+ " + " ".join(args), file=sys.stderr)
    subprocess.run([sys.executable, "-c", f"import sys; sys.argv[0] = {args[0]!r}; "
                    f"from {ENTRY[args[0]]} import main; main()", *args[1:]], check=True, cwd=str(REPO))


ENTRY = {"scaseg-export": "scaseg.export.cli", "scaseg-synth": "scaseg.data.synth.cli"}


def prepare(work: Path, calib_num: int) -> None:
    """The three exports and the synthetic set, with the project's own commands."""
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if not data.is_dir():
        _cli(["scaseg-synth", str(data), "--num", "200", "--seed", "1", "--size", "256x512", "--video-frames", "0", "-q"])
    if not (work / FILES["fp32"]).is_file():
        _cli(["scaseg-export", str(CHECKPOINT), "--imgsz", "512x512", "-o", str(work / FILES["fp32"]), "-q"])
    for target in ("cpu", "tensorrt"):
        dest = work / FILES[f"int8 {target}"]
        if not dest.is_file():
            _cli(["scaseg-export", str(CHECKPOINT), "--imgsz", "512x512", "--precision", "int8", "--calib", str(data),
                  "--calib-num", str(calib_num), "--int8-target", target, "-o", str(dest), "-q"])


class Recorder:
    """A predictor that keeps every label map it returns (evaluate's mIoU pass doubles as the agreement pass)."""

    def __init__(self, predictor: Any) -> None:
        self.predictor, self.info, self.labels = predictor, predictor.info, []

    def __call__(self, image: np.ndarray) -> np.ndarray:
        out = self.predictor(image)
        self.labels.append(out)
        return out


def versions() -> dict[str, str]:
    import onnxruntime

    found = {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    try:
        import openvino

        found["openvino"] = openvino.__version__.split("-")[0]
    except ImportError:
        found["openvino"] = "not installed"
    return found


def measure(work: Path, threads: int, warmup: int, runs: int, limit: Optional[int]) -> dict[str, Any]:
    from perf_machine import machine_info
    from perf_measure import interleaved

    from scaseg.data.metrics import label_agreement
    from scaseg.errors import ScasegError
    from scaseg.runtime.backends import open_backend
    from scaseg.runtime.bench import evaluate, open_eval_dataset
    from scaseg.runtime.predictor import Predictor
    from scaseg.runtime.timing import summarize

    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    machine = machine_info()
    opened, rows = {}, []
    for label, key, backend in CONFIGS:
        row: dict[str, Any] = {"label": label, "file": FILES[key], "backend": backend}
        try:
            opened[label] = open_backend(work / FILES[key], backend, device="cpu", threads=threads)
            row["precision"] = opened[label].precision
        except ScasegError as exc:
            row["error"] = str(exc)
        rows.append(row)
    ref = opened["ORT fp32"]
    from scaseg.data.synth import render_scene

    image, _ = render_scene(0, (256, 512))
    x, _ = Predictor(ref).prepare(image)
    batch = np.ascontiguousarray(x[None])
    laps = interleaved({k: partial(be.infer, batch) for k, be in opened.items()}, warmup, runs, "cpu backends")
    ds = open_eval_dataset(str(work / "data"), "auto", "val", ref.info)
    scored: dict[str, list[np.ndarray]] = {}
    for row in rows:
        if row["label"] not in opened:
            continue
        stats = summarize(laps[row["label"]])["latency_ms"]
        row.update(median_ms=stats["p50"], p90_ms=stats["p90"])
        rec = Recorder(Predictor(opened[row["label"]]))
        row["miou"] = 100 * evaluate(rec, ds, limit, progress=False)["miou"]  # type: ignore[arg-type]
        scored[row["label"]] = rec.labels
    for row in rows:
        if row["label"] in scored:
            row["agreement"] = 100 * label_agreement(scored[row["label"]], scored["ORT fp32"])
    for be in opened.values():
        be.close()
    return {"machine": machine, "versions": versions(), "threads": threads, "warmup": warmup, "runs": runs,
            "images": len(scored["ORT fp32"]), "load_after": os.getloadavg()[0], "rows": rows,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def render(result: dict[str, Any], command: str) -> str:
    m, v, rows = result["machine"], result["versions"], result["rows"]
    base = next(r for r in rows if r["label"] == "ORT fp32")
    lines = [
        f"`{command}` on {result['date']} (load average {m['load_before'][0]:.2f} before, {result['load_after']:.2f} "
        f"after): {m['cpu']}, {m['cores']} cores (SIMD: {m['simd']}); Python {v['python']}, ONNX Runtime "
        f"{v['onnxruntime']}, OpenVINO {v['openvino']}, numpy {v['numpy']}.",
        "",
        f"scaseg-t (shipped scaseg-t-synth) at 512x512, batch 1, {result['threads']} threads, CPU. Median of "
        f"{result['runs']} interleaved rounds (after {result['warmup']} warm-up); speed-up = ORT fp32 median / "
        f"median. mIoU (%) on the {result['images']} val scenes of `scaseg-synth --num 200 --seed 1 --size 256x512` "
        "(stretched to 512x512 and back, as scaseg-bench scores); agreement: pixels with the label ORT fp32 gives.",
        "",
        "| configuration | file | median ms | p90 ms | speed-up | mIoU | vs ORT fp32 (points) | label agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | {r['file']} | - | - | - | - | - | not run: {r['error']} |")
            continue
        lines.append(f"| {r['label']} | {r['file']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
                     f"{base['median_ms'] / r['median_ms']:.2f}x | {r['miou']:.2f} | {r['miou'] - base['miou']:+.2f} | "
                     f"{r['agreement']:.2f}% |")
    ran = [r for r in rows if "error" not in r]
    fastest = min(ran, key=lambda r: r["median_ms"])
    speed, drop = base["median_ms"] / fastest["median_ms"], base["miou"] - fastest["miou"]
    good = [r for r in ran if base["miou"] - r["miou"] <= TARGET_DROP]
    best_good = min(good, key=lambda r: r["median_ms"])
    met = speed >= TARGET_SPEEDUP and drop <= TARGET_DROP
    lines += ["", f"Fastest: **{fastest['label']}**, {speed:.2f}x ORT fp32, mIoU {-drop:+.2f} points; fastest within "
              f"{TARGET_DROP} points lost: {best_good['label']}, {base['median_ms'] / best_good['median_ms']:.2f}x. Target "
              f"(>= {TARGET_SPEEDUP:.0f}x with <= {TARGET_DROP} points lost): "
              + ("**met**." if met else "**not met** on this machine.")]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/scaseg-cpu-backends"))
    ap.add_argument("--prepare", action="store_true", help="make the exports and the data set, then stop")
    ap.add_argument("--calib-num", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--limit", type=int, default=None, help="score at most N val images")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    ap.add_argument("--doc", type=Path, help=f"replace the '{SECTION}' section of this markdown file")
    ap.add_argument("--readme", type=Path, help=f"replace the '{SECTION}' section of the README too")
    args = ap.parse_args()
    if args.prepare:
        prepare(args.work, args.calib_num)
        return
    missing = [name for name in FILES.values() if not (args.work / name).is_file()]
    if missing or not (args.work / "data").is_dir():
        raise SystemExit(f"bench_cpu_backends: {args.work} lacks {', '.join(missing) or 'data/'}: run --prepare first")
    result = measure(args.work, args.threads, args.warmup, args.runs, args.limit)
    command = ("python benchmarks/bench_cpu_backends.py --threads "
               f"{args.threads} --warmup {args.warmup} --runs {args.runs}" + (f" --limit {args.limit}" if args.limit else ""))
    text = render(result, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    from scaseg.readme import replace_section

    for doc in (args.doc, args.readme):
        if doc is not None:
            replace_section(doc, SECTION, text)


if __name__ == "__main__":
    main()
