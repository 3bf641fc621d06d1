"""The pruning trade-off curve of the shipped scaseg-t-synth: pruned to 0.75, 0.5 and 0.25 of its MACs and by
per-stage ratios, each fine-tuned with and without distillation; MACs, params, val mIoU, ONNX Runtime fp32 and int8
latency, and the issue's target (>= 2x faster in fp32 at <= 1.5 mIoU points lost).

Four phases, each with the project's own commands (docs/pruning.md, "The curve"):

    python benchmarks/bench_prune.py --phase prepare --work runs/prune     # data, prune, fine-tune, export (long)
    python benchmarks/bench_prune.py --phase score --work runs/prune       # MACs, params, val mIoU (no timing)
    python benchmarks/bench_prune.py --phase time --work runs/prune --threads 2   # latency (idle machine only)
    python benchmarks/bench_prune.py --phase report --work runs/prune --doc docs/pruning.md \
        --plot docs/pruning_curve.png

prepare: ``scaseg-synth`` writes the CPU recipe's data (600 scenes of 256x512, seed 0, 60 val: recipes/cpu_synth.sh),
``scaseg-prune`` prunes the shipped model to each point of POINTS (``--round-to``, default 8, at 512x1024),
``scaseg-train --init`` fine-tunes each pruned
model with the recipe's loss and crops (``--iters``, default 1000), once plain and once with ``--distill`` the shipped
model, and ``scaseg-export`` writes fp32 and int8 (``--int8-target cpu``, 32 calibration images) ONNX files at
512x1024 of the shipped model and of every fine-tuned one. score: MACs and params at 512x1024 from the checkpoints
(scaseg.stats's counter) and val mIoU at the recipe's 192x384 input (scaseg.train.evaluate, the trainer's own
validation) of the shipped model, each pruned model before fine-tuning and each fine-tuned one. time: the ONNX files
in interleaved rounds (perf_measure.in_blocks), one batch-1 512x1024 scene. Results go to WORK/result.json.
``--quick`` shrinks everything (12 scenes of 64x128, 2 steps, exports at 64x128, no int8) to check the script runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT = REPO / "scaseg" / "weights" / "scaseg-t-synth.pth"
# Every point of the curve by name: what scaseg-prune is told (each with --round-to, below). The uniform points
# remove the same fraction of every channel group; "stages" cuts where the time goes (docs/pruning.md, "Where the
# time goes"): the stride-4 FFN and LPM hidden widths most, the stage-1 residual width not at all.
POINTS = {
    "0.75": ["--macs", "0.75"],
    "0.5": ["--macs", "0.5"],
    "0.25": ["--macs", "0.25"],
    "half": ["--stage-ratios", "0.5,0.5,0.5,0.5"],
    "stages": ["--stage-ratios", "0,0.5,0.5,0.5", "--hidden-ratios", "0.75,0.75,0.75,0.75"],
}
MODES = ("plain", "distill")
SECTION = "prune-curve"
PARTS_SECTION = "prune-parts"
SPEEDUP, LOSS = 2.0, 1.5  # the target: >= 2x faster than the shipped model in fp32, <= 1.5 mIoU points lost
ENTRY = {"scaseg-export": "scaseg.export.cli", "scaseg-synth": "scaseg.data.synth.cli",
         "scaseg-prune": "scaseg.prune.cli", "scaseg-train": "scaseg.train.cli"}


def settings(quick: bool) -> dict[str, Any]:
    """What prepare and score use: the full curve, or the tiny check of ``--quick``."""
    if quick:
        return {"synth": ["--num", "12", "--size", "64x128", "--val-fraction", "0.25"], "imgsz": "64x128",
                "crop": "64x128", "val": "64x128", "int8": False, "train": ["--batch", "2", "--warmup-iters", "0"]}
    return {"synth": ["--num", "600", "--size", "256x512", "--val-fraction", "0.1", "--workers", "2"],
            "imgsz": "512x1024", "crop": "128x256", "val": "192x384", "int8": True,
            "train": ["--batch", "4", "--scale-range", "0.4", "0.75", "--class-weight", "balanced", "--logit-adjust",
                      "--warmup-iters", "20", "--channels-last"]}


def _cli(args: list[str]) -> None:
    print("+ " + " ".join(args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-c", f"import sys; sys.argv[0] = {args[0]!r}; "
                    f"from {ENTRY[args[0]]} import main; main()", *args[1:]], check=True, cwd=str(REPO))


def models(work: Path) -> dict[str, Path]:
    """Every checkpoint of the curve by its row name (the shipped one first)."""
    found = {"scaseg-t-synth": CHECKPOINT}
    for point in POINTS:
        if not (work / f"pruned-{point}.pth").is_file():
            continue  # not a point of this run (--points)
        found[f"{point} pruned"] = work / f"pruned-{point}.pth"
        for mode in MODES:
            found[f"{point} {mode}"] = work / f"ft-{point}-{mode}" / "last.pth"
    return found


def prepare(work: Path, points: list[str], iters: int, lr: float, round_to: int, quick: bool) -> None:
    """Data, the pruned models, two fine-tuning runs each and the ONNX files, each skipped when already there."""
    s = settings(quick)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if not data.is_dir():
        _cli(["scaseg-synth", str(data), "--seed", "0", "--video-frames", "0", "-q", *s["synth"]])
    calib = ["--calib", str(data), "--calib-num", "32", "--int8-target", "cpu"]

    def export(name: str, ckpt: Path) -> None:
        (work / "onnx").mkdir(exist_ok=True)
        for precision in ("fp32", "int8") if s["int8"] else ("fp32",):
            dest = work / "onnx" / f"{name.replace(' ', '-')}.{precision}.onnx"
            if not dest.is_file():
                _cli(["scaseg-export", str(ckpt), "-o", str(dest), "--imgsz", s["imgsz"], "--precision", precision,
                      "-q", *(calib if precision == "int8" else [])])

    export("scaseg-t-synth", CHECKPOINT)
    for point in points:  # each point whole (pruned, fine-tuned, exported) before the next
        pruned = work / f"pruned-{point}.pth"
        if not pruned.is_file():
            _cli(["scaseg-prune", str(CHECKPOINT), "-o", str(pruned), *POINTS[point], "--round-to", str(round_to),
                  "--imgsz", s["imgsz"]])
        for mode in MODES:
            run = work / f"ft-{point}-{mode}"
            if not (run / "last.pth").is_file():
                args = ["scaseg-train", "--data", str(data), "--dataset", "cityscapes", "--init", str(pruned), "-o",
                        str(run), "--device", "cpu", "--threads", "2", "--iters", str(iters), "--crop", s["crop"],
                        "--val-size", s["val"], "--val-interval", str(iters), "--lr", str(lr), "--head-lr-mult", "1",
                        "--workers", "1", "--seed", "0", "-q", *s["train"]]
                _cli(args + (["--distill", str(CHECKPOINT)] if mode == "distill" else []))
            export(f"{point} {mode}", run / "last.pth")


def score(work: Path, quick: bool) -> dict[str, Any]:
    """MACs and params at the timing size, val mIoU at the recipe's validation size; no timing."""
    import torch

    import scaseg
    from scaseg.cli import parse_size
    from scaseg.data.datasets import open_dataset
    from scaseg.prune.core import cost
    from scaseg.train.evaluate import evaluate

    s = settings(quick)
    size, val = parse_size(s["imgsz"]), parse_size(s["val"])
    torch.set_num_threads(2)
    ds = open_dataset(work / "data", "cityscapes", "val")
    rows = []
    for name, ckpt in models(work).items():
        if not ckpt.is_file():
            continue
        model, _ = scaseg.load_model(ckpt)
        c = cost(model, size)  # type: ignore[arg-type]
        miou = 100 * float(evaluate(model, ds, size=val, progress=False)["miou"])
        rows.append({"model": name, "gmacs": c.macs / 1e9, "params_m": c.params / 1e6, "miou": miou})
        print(f"{name:16s} {c.macs / 1e9:7.2f} GMACs {c.params / 1e6:6.2f} M params  val mIoU {miou:6.2f}%",
              file=sys.stderr, flush=True)
    return {"rows": rows, "imgsz": s["imgsz"], "val_size": s["val"], "val_images": len(ds)}


def time_onnx(work: Path, threads: int, runs: int, quick: bool) -> dict[str, float]:
    """Median ms of every ONNX file, batch 1, rounds interleaved across files (perf_measure.in_blocks)."""
    import numpy as np
    import onnxruntime as ort
    from perf_measure import in_blocks

    from scaseg.cli import parse_size

    h, w = parse_size(settings(quick)["imgsz"])  # type: ignore[misc]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sessions = {p.name: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                for p in sorted((work / "onnx").glob("*.onnx"))}
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    return in_blocks(sessions, x, runs)


PARTS = ("encoder stage 1", "encoder stage 2", "encoder stage 3", "encoder stage 4", "decoder attention",
         "decoder LPM", "decoder fusion and output", "other")


def part_of(node: str) -> str | None:
    """Which part of the model a node belongs to, from the module path in its name (the exporter names nodes after
    modules: ``/model/backbone/block2.1/...``); None for a name without one."""
    import re

    m = re.search(r"backbone/(?:patch_embed|block|norm)(\d)", node)
    if m:
        return f"encoder stage {m.group(1)}"
    if "decode_head/blocks." in node:
        return "decoder LPM" if "/lpm" in node else "decoder attention"
    if "decode_head/" in node:
        return "decoder fusion and output"  # rho pools, D_2..D_4 up-sampled, fusion, classifier (and, by the
    return None                             # rule of graph_parts, the logits' resize to the input size)


def graph_parts(nodes: Sequence[Any]) -> dict[str, str]:
    """The part of every node of a graph (ONNX Runtime's optimized one: its node names are the profile's): from the
    name where it has a module path, else the part of its first consumer that has one (ONNX Runtime's layout
    reorders and fused nodes, e.g. LayerNormFusion, serve the node they feed), else of its producer, else "other"."""
    part = {n.name: part_of(n.name) for n in nodes}
    consumers: dict[str, list[str]] = {}
    producer: dict[str, str] = {}
    for n in nodes:
        for t in n.input:
            consumers.setdefault(t, []).append(n.name)
        for t in n.output:
            producer[t] = n.name
    for n in reversed(nodes):
        if part[n.name] is None:
            part[n.name] = next((part[c] for t in n.output for c in consumers.get(t, []) if part[c]), None)
    for n in nodes:
        if part[n.name] is None:
            part[n.name] = next((part[producer[t]] for t in n.input if t in producer and part[producer[t]]), None)
    return {k: v or "other" for k, v in part.items()}


def time_parts(work: Path, threads: int, runs: int, quick: bool) -> dict[str, dict[str, float]]:
    """Where the time goes: ONNX Runtime's own profile (kernel time per node, mean of ``runs`` runs after one
    warm-up) of the shipped model's and every plain fine-tuned fp32 ONNX file (the distilled ones have the same
    architecture), summed by ``graph_parts`` of the graph ONNX Runtime runs; ms per run."""
    import collections
    import tempfile

    import numpy as np
    import onnx
    import onnxruntime as ort

    from scaseg.cli import parse_size

    h, w = parse_size(settings(quick)["imgsz"])  # type: ignore[misc]
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    out: dict[str, dict[str, float]] = {}
    shipped = work / "onnx" / "scaseg-t-synth.fp32.onnx"
    for path in [shipped, *sorted((work / "onnx").glob("*-plain.fp32.onnx"))]:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.enable_profiling, opts.profile_file_prefix = True, str(work / "profile")
        opts.log_severity_level = 3  # not the warning that an optimized graph is machine-specific: it is not kept
        with tempfile.TemporaryDirectory() as tmp:
            opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            parts_of = graph_parts(list(onnx.load(opts.optimized_model_filepath, load_external_data=False).graph.node))
        name = session.get_inputs()[0].name
        for _ in range(runs + 1):
            session.run(None, {name: x})
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
        trace.unlink()
        first = min((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
        warm = first["ts"] + first["dur"]  # the warm-up run is not counted
        parts: collections.Counter[str] = collections.Counter()
        for event in events:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= warm:
                parts[parts_of.get(event["name"][: -len("_kernel_time")], "other")] += event["dur"] / 1000 / runs
        out[path.name] = {k: parts.get(k, 0.0) for k in PARTS}
        print(f"{path.name}: {sum(parts.values()):.1f} ms of kernels", file=sys.stderr, flush=True)
    return out


def render_parts(result: dict[str, Any]) -> str:
    """The table of where the time goes, one column per fp32 model."""
    parts = result["parts_ms"]
    names = list(parts)
    lines = [f"Machine: {result.get('parts_machine', 'not recorded')}; ONNX Runtime CPU profile, fp32, batch 1, "
             f"{result.get('parts_threads')} threads, kernel ms per run (mean of {result.get('parts_runs')}).", "",
             "| part | " + " | ".join(n.replace(".fp32.onnx", "") for n in names) + " |",
             "|---|" + "---|" * len(names)]
    totals = {n: sum(parts[n].values()) for n in names}
    for part in PARTS:
        if not any(parts[n][part] for n in names):
            continue  # "other" when every node was attributed
        lines.append(f"| {part} | " + " | ".join(f"{parts[n][part]:.1f} ({parts[n][part] / totals[n]:.0%})"
                                                  for n in names) + " |")
    lines.append("| all kernels | " + " | ".join(f"{totals[n]:.1f}" for n in names) + " |")
    return "\n".join(lines)


def render(result: dict[str, Any], doc: Path | None, plot: Path | None) -> str:
    """The Markdown table (and the plot) of a result; written between the doc's prune-curve markers."""
    ms = result.get("latency_ms", {})
    lines = [f"Machine: {result.get('machine', 'not recorded')}; MACs at {result['imgsz']}, val mIoU at "
             f"{result['val_size']} on {result['val_images']} synthetic val scenes"
             + (f"; latency: ONNX Runtime CPU, batch 1, {result['threads']} threads, median of {result['runs']} "
                "interleaved runs" if ms else "; latency not measured") + ".", "",
             "| model | GMACs | params (M) | val mIoU | fp32 ms | fp32 speed-up | int8 ms |",
             "|---|---|---|---|---|---|---|"]
    rows = result["rows"]
    base = rows[0]  # the shipped model
    base_ms = ms.get(f"{base['model']}.fp32.onnx")
    met = []
    for r in rows:
        stem = r["model"].replace(" ", "-")
        fp32, int8 = ms.get(f"{stem}.fp32.onnx"), ms.get(f"{stem}.int8.onnx")
        speedup = base_ms / fp32 if fp32 and base_ms else None
        cells = [r["model"], f"{r['gmacs']:.2f}", f"{r['params_m']:.2f}", f"{r['miou']:.2f}%",
                 f"{fp32:.1f}" if fp32 else "-", f"{speedup:.2f}x" if speedup else "-", f"{int8:.1f}" if int8 else "-"]
        lines.append("| " + " | ".join(cells) + " |")
        if speedup and r is not base and speedup >= SPEEDUP and base["miou"] - r["miou"] <= LOSS:
            lost = base["miou"] - r["miou"]
            met.append(f"{r['model']} ({speedup:.2f}x, " + (f"{lost:.2f} points lost)" if lost >= 0 else
                                                             f"{-lost:.2f} points gained)"))
    if base_ms:
        lines += ["", f"Target (>= {SPEEDUP:g}x faster in fp32, <= {LOSS:g} mIoU points lost): "
                  + ("met by " + ", ".join(met) if met else "not met by any point") + "."]
    text = "\n".join(lines)
    if plot is not None:
        _plot(result, plot)
    if doc is not None:
        from scaseg.readme import replace_section

        link = os.path.relpath(plot, doc.parent) if plot is not None else None
        replace_section(doc, SECTION, (f"![val mIoU against GMACs]({link})\n\n" if link else "") + text)
    return text


def _plot(result: dict[str, Any], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rows = {r["model"]: r for r in result["rows"]}
    uniform = [p for p in POINTS if POINTS[p][0] == "--macs" and f"{p} pruned" in rows]
    for suffix, style in (("pruned", "x:"), ("plain", "s--"), ("distill", "o-")):
        pts = [rows[f"{p} {suffix}"] for p in uniform if f"{p} {suffix}" in rows]
        if pts:
            ax.plot([p["gmacs"] for p in pts], [p["miou"] for p in pts], style,
                    label=f"MACs {'/'.join(uniform)}, {suffix}")
        for p in POINTS:
            if p not in uniform and f"{p} pruned" in rows and f"{p} {suffix}" in rows:
                r = rows[f"{p} {suffix}"]
                ax.plot([r["gmacs"]], [r["miou"]], style[0], ms=9, mfc="none", label=f"{p}, {suffix}")
    if "scaseg-t-synth" in rows:
        shipped = rows["scaseg-t-synth"]
        ax.plot([shipped["gmacs"]], [shipped["miou"]], "k*", ms=12, label="scaseg-t-synth")
    ax.set(xlabel=f"GMACs at {result['imgsz']}", ylabel="val mIoU (%)", title="pruning trade-off, synthetic streets")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dest, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--phase", choices=("prepare", "score", "time", "parts", "report"), required=True)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "prune",
                    help="folder of every file (default runs/prune)")
    ap.add_argument("--iters", type=int, default=1000, help="fine-tuning steps per run (default 1000)")
    ap.add_argument("--round-to", type=int, default=8, help="scaseg-prune --round-to of every point (default 8)")
    ap.add_argument("--points", default=",".join(POINTS),
                    help=f"prepare: the points of the curve, of {', '.join(POINTS)} (default all)")
    ap.add_argument("--lr", type=float, default=1e-3, help="fine-tuning peak learning rate (default 1e-3)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per file (default 20)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and 2 steps: check that the script runs")
    ap.add_argument("--doc", type=Path, help="report: write the table into this doc's prune-curve markers")
    ap.add_argument("--plot", type=Path, help="report: write the plot (PNG) here")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    from perf_machine import machine_line

    out = args.work / "result.json"
    if args.phase == "prepare":
        start = time.perf_counter()
        points = args.points.split(",")
        if not set(points) <= set(POINTS):
            ap.error(f"--points takes names of {', '.join(POINTS)}, not {args.points}")
        prepare(args.work, points, 2 if args.quick else args.iters, args.lr, args.round_to, args.quick)
        print(f"prepared {args.work} in {time.perf_counter() - start:.0f} s on {machine_line()}", file=sys.stderr)
    elif args.phase == "score":
        result = {**score(args.work, args.quick), "machine": machine_line(), "date": time.strftime("%Y-%m-%d %H:%M")}
        out.write_text(json.dumps(result, indent=1))
    elif args.phase == "time":
        result = json.loads(out.read_text())
        result.update(latency_ms=time_onnx(args.work, args.threads, args.runs, args.quick), threads=args.threads,
                      runs=args.runs, machine=machine_line(), load_after=os.getloadavg()[0])
        out.write_text(json.dumps(result, indent=1))
    elif args.phase == "parts":
        result = json.loads(out.read_text())
        result.update(parts_ms=time_parts(args.work, args.threads, args.runs, args.quick), parts_threads=args.threads,
                      parts_runs=args.runs, parts_machine=machine_line())
        out.write_text(json.dumps(result, indent=1))
    else:
        result = json.loads(out.read_text())
        print(render(result, args.doc, args.plot))
        if "parts_ms" in result:
            text = render_parts(result)
            print(text)
            if args.doc is not None:
                from scaseg.readme import replace_section

                replace_section(args.doc, PARTS_SECTION, text)


if __name__ == "__main__":
    main()
