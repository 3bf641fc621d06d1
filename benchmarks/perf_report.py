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
import json
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from perf_machine import FLOPS_PER_CYCLE, machine_info, matmul_peak
from perf_measure import REPO, Row, backend_table, export_fp32, find_checkpoint, gmacs, make_plan, peak_rss, rss_probe, sweep
from perf_render import plot, render
from scaseg.cli import SIZE_METAVAR, size_type
from scaseg.errors import ScasegError
from scaseg.fileio import atomic_path
from scaseg.readme import replace_section

SECTION = "perf"
SYNTH_SEED = 1  # not the recipe's seed 0: scenes the shipped checkpoint never saw


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and few runs (< 3 min)")
    ap.add_argument("--full", action="store_true", help="add 1024x2048 to the resolution sweep")
    ap.add_argument("--data", default=None, help="dataset root for calibration and mIoU, or 'synth'")
    ap.add_argument("--checkpoint", default=None, help="scaseg-t checkpoint (default: the shipped one if present)")
    ap.add_argument("--variant", default="scaseg-t", help="variant when no checkpoint is used")
    ap.add_argument("--imgsz", type=size_type, default=None, metavar=SIZE_METAVAR,
                    help="backend-table input size (default: the checkpoint's, else 256x512)")
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
        raise ScasegError(f"--imgsz must be at least 32x32, got {args.imgsz[0]}x{args.imgsz[1]}")
    for opt in ("doc", "plot"):
        parent = _path(getattr(args, opt)).parent
        if not parent.is_dir():
            raise ScasegError(f"the folder of --{opt} {getattr(args, opt)} does not exist")


def run(args: argparse.Namespace) -> None:
    import torch
    from tqdm import tqdm

    import scaseg
    from scaseg.calibration.precision import make_precision

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


# Sections of docs/performance.md that other scripts write (a run's output between <!-- NAME:start/end --> markers;
# benchmarks/bench_pipeline.py, bench_frame_ops.py, bench_video_io.py, bench_grid_scaling.py, bench_cpu_backends.py,
# bench_cpu_memory.py...): kept as they are when this script rewrites the page, from the heading above the markers
# to the next heading (the reading written under a table stays with it). This script's own page has no markers.
_MARKED = re.compile(r"<!-- ([A-Za-z0-9_-]+):start -->")


def _owned_elsewhere(doc: Path) -> str:
    """Every marked section of the current ``doc`` (heading line to the next heading), in its order, to append to a
    rewrite; a heading with several marked blocks is kept once."""
    try:
        old = doc.read_text(encoding="utf-8")
    except OSError:
        return ""
    kept: list[str] = []
    for match in _MARKED.finditer(old):
        i, j = match.start(), old.find(f"<!-- {match.group(1)}:end -->", match.end())
        if j < 0:
            continue
        head = old.rfind("\n## ", 0, i)
        nxt = old.find("\n## ", j)
        section = old[head + 1 if head >= 0 else i : nxt if nxt >= 0 else len(old)].strip("\n")
        if section not in kept:
            kept.append(section)
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
