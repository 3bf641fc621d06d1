"""INT8 for ONNX Runtime CPU: fp32 vs the previous and the current ``cpu`` Q/DQ placement, side by side in one run.

    python benchmarks/bench_int8_cpu.py prepare WORK [--model scaseg/weights/scaseg-t-synth.pth] [--imgsz 512 512]
    /work/coord/cpu-exclusive python benchmarks/bench_int8_cpu.py time WORK [--threads 2 1] [--runs 21]

``prepare`` (slow, untimed) exports the fp32 ONNX at --imgsz, writes scaseg-synth scenes at the checkpoint's stored
size (32 train images calibrate, 16 val images score), and makes each int8 file with make_precision, accuracy
guard on (--max-miou-drop); it scores every file on the val split as scaseg-bench does (``calibration.guard.miou``
at each image's source size) and stores files and scores in WORK. ``time`` loads them, times every file with
each thread count (interleaved blocks of 3 timed runs per file, each after one untimed run, median of --runs), and prints
one table per thread count: ms, ratio to fp32, mIoU and its drop, argmax agreement with fp32, and the machine
and versions. Variants (``--variant``) are extra placements one step from the current one, for exploration.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from scaseg.calibration import data, int8
from scaseg.calibration.precision import load_fp32, make_precision
from scaseg.calibration.guard import miou
from scaseg.calibration.session import make_session
from scaseg.data.datasets import open_dataset
from scaseg.data.metrics import label_agreement
from scaseg.runtime.backends.onnxruntime import make_session as ort_session

from perf_machine import machine_line
from perf_measure import in_blocks

#: The placement shipped for ``cpu`` before qdq_graph_rewrite.py and the BatchNorm fold (docs/precision.md): GELUs,
#: residual Adds and BatchNorms float.
PREVIOUS = replace(int8.PLACEMENTS["cpu"], target="cpu-previous", int8_gelu=False, int8_add=False, fold_bn=False)
VARIANTS = {
    "cpu-previous": PREVIOUS,
    "cpu, float GELU": replace(int8.PLACEMENTS["cpu"], int8_gelu=False),
    "cpu, float residual Adds": replace(int8.PLACEMENTS["cpu"], int8_add=False),
    "cpu, no BatchNorm fold": replace(int8.PLACEMENTS["cpu"], fold_bn=False),
    "cpu, 8-bit weights": replace(int8.PLACEMENTS["cpu"], weight_max=127),
    "cpu, min_outputs 32": replace(int8.PLACEMENTS["cpu"], min_outputs=32),
    "cpu, min_features 64": replace(int8.PLACEMENTS["cpu"], min_features=64),
    "cpu, every depthwise kernel": replace(int8.PLACEMENTS["cpu"], depthwise_kernels=None),
}


def _held(root: str, info, val_num: int) -> data.HeldOut:
    val = open_dataset(root, split="val")
    items = [data.Item(Path(p), val, i) for i, p in enumerate(val.image_paths)][:val_num]
    return data.heldout_data(items, info)


def _labels(sess: ort.InferenceSession, batches: list[np.ndarray]) -> list[np.ndarray]:
    i, o = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    return [np.argmax(sess.run([o], {i: b})[0], axis=1) for b in batches]


def prepare(args: argparse.Namespace) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "fp32.onnx"
    if not fp32.exists():
        subprocess.run([sys.executable, "-c", "from scaseg.export.cli import main; main()", args.model, "-o", str(fp32),
                        "--imgsz", f"{args.imgsz[0]}x{args.imgsz[1]}"], check=True, stdout=subprocess.DEVNULL)
    model, info = load_fp32(str(fp32))
    import scaseg

    stored = scaseg.load_model(args.model)[1].input_size or tuple(args.imgsz)
    root = work / "synth"
    if not root.exists():
        from scaseg.data.synth import write_dataset

        n = args.calib_num + args.val_num
        write_dataset(str(root), num=n, size=tuple(stored), val_fraction=args.val_num / n, video_frames=0, progress=False)
    held = _held(str(root), info, args.val_num)
    files = {"fp32": {"path": str(fp32)}}
    targets = ["cpu-previous", "cpu"] + list(args.variant)
    for name in targets:
        placement = VARIANTS.get(name) or int8.PLACEMENTS[name]
        key = "_bench_" + "".join(c if c.isalnum() else "_" for c in name)
        int8.PLACEMENTS[key] = replace(placement, target=key)
        out = work / f"{key}.onnx"
        start = time.perf_counter()
        try:
            summary = make_precision(str(fp32), str(out), "int8", calib_dir=str(root), calib_num=args.calib_num,
                                     target=key, max_miou_drop=args.max_miou_drop, cache_dir=str(work / "cache"))
        finally:
            del int8.PLACEMENTS[key]
        files[name] = {"path": str(out), "seconds": round(time.perf_counter() - start, 1),
                       **{k: summary[k] for k in ("quantized_ops", "miou_drop", "kept_float_blocks")}}
    ref = None
    for name, entry in files.items():
        preds = _labels(make_session(onnx.load(entry["path"]), threads=1), held.batches)
        ref = preds if ref is None else ref
        entry["miou"] = miou(held.to_source(preds, info.num_classes), held.labels, info.num_classes)
        entry["argmax_agreement"] = 100.0 * label_agreement(preds, ref)
    meta = {"model": args.model, "imgsz": list(args.imgsz), "data": f"scaseg-synth, {args.calib_num} train images "
            f"calibrate, {len(held.batches)} val images score, image size {tuple(stored)}",
            "max_miou_drop": args.max_miou_drop, "files": files}
    (work / "prepared.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


def time_all(args: argparse.Namespace) -> None:
    work = Path(args.work)
    meta = json.loads((work / "prepared.json").read_text())
    files = meta["files"]
    if args.only:
        files = {k: v for k, v in files.items() if k == "fp32" or k in args.only}
    x = np.random.default_rng(0).standard_normal((1, 3, *meta["imgsz"])).astype(np.float32)
    print(f"# {machine_line()}, onnx {onnx.__version__}")
    print(f"# model {meta['model']} at {meta['imgsz'][0]}x{meta['imgsz'][1]}; data: {meta['data']}; guard on "
          f"(--max-miou-drop {meta['max_miou_drop']}); median of {args.runs} runs per file, interleaved blocks of 3, each after an untimed run")
    m0 = files["fp32"]["miou"]
    for threads in args.threads:
        sessions = {}
        for k, v in files.items():
            sessions[k] = ort_session(v["path"], threads=threads)
        ms = in_blocks(sessions, x, args.runs)
        del sessions
        print(f"\n## {threads} thread(s)")
        print("| model | ms | vs fp32 | mIoU | drop | argmax = fp32 | quantized ops | kept float |")
        print("|---|---|---|---|---|---|---|---|")
        for k, v in files.items():
            drop = "-" if k == "fp32" else f"{round(m0 - v['miou'], 2) + 0.0:.2f}"
            print(f"| {k} | {ms[k]:.1f} | {ms['fp32'] / ms[k]:.2f}x | {v['miou']:.2f} | {drop} | "
                  f"{v['argmax_agreement']:.2f}% | {v.get('quantized_ops', '-')} | {v.get('kept_float_blocks', '-')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=("prepare", "time"))
    ap.add_argument("work")
    ap.add_argument("--model", default="scaseg/weights/scaseg-t-synth.pth")
    ap.add_argument("--imgsz", nargs=2, type=int, default=(512, 512))
    ap.add_argument("--calib-num", type=int, default=32)
    ap.add_argument("--val-num", type=int, default=16)
    ap.add_argument("--max-miou-drop", type=float, default=0.5)
    ap.add_argument("--variant", nargs="*", default=[], choices=sorted(VARIANTS))
    ap.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--only", nargs="*", default=[], help="time: fp32 and these files only")
    args = ap.parse_args()
    prepare(args) if args.step == "prepare" else time_all(args)


if __name__ == "__main__":
    main()
