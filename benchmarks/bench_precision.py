"""INT8 / FP16 vs FP32 on ONNX Runtime CPU, measured side by side in one run (medians of interleaved blocks).

    python benchmarks/bench_precision.py MODEL [--imgsz N|HxW] [--data DIR] [--threads N] [--clock wall|cpu]

MODEL: an fp32 ONNX from scaseg-export, a checkpoint (.pth/.safetensors; exported here with scaseg-export at
--imgsz), or a variant name (e.g. scaseg-t) for an untrained model, exported the same way: its latency figures are
real, its mIoU and agreement figures are not (an untrained model's argmax flips on tiny logit changes).
DATA: a dataset root (default: scaseg-synth scenes written to a temporary folder, at the checkpoint's stored input
size, else --imgsz): calibration from its train split, mIoU on its val split (the network input is --imgsz; the
shared preprocessing resizes the images to it).
--clock cpu (needs --threads 1, where ONNX Runtime computes on the calling thread): CPU time of that thread per
run, which other jobs on a shared machine do not inflate; wall: elapsed time.

Prints three tables:
1. Q/DQ placement choices on the same thresholds, no guard: latency and ratio to fp32, argmax agreement with fp32,
   and the ops quantized. "fp32 + cpu rewrites" is the float graph the cpu placement quantizes (GELU fused):
   its ratio is the part of the speed-up that is not int8.
2. Calibration methods (minmax, entropy, percentile) x placements, no guard: mIoU on the val split.
3. What make_precision ships (int8 for cpu and for tensorrt, accuracy guard on; fp16): latency, mIoU on the val
   split, drop, agreement with fp32, nodes kept float, time to make (--skip-shipped leaves this table out).

    python benchmarks/bench_precision.py scaseg/weights/scaseg-t-synth.pth --imgsz 512 --threads 1 --clock cpu
    python benchmarks/bench_precision.py scaseg-t --imgsz 512 --threads 2 --skip-shipped   # speed only
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import onnx
import onnxruntime as ort

from scaseg.calibration import data, int8
from scaseg.calibration.precision import load_fp32, make_precision
from scaseg.calibration.guard import miou
from scaseg.calibration.ranges import METHODS, collect_stats
from scaseg.calibration.session import make_session, runner
from scaseg.cli import SIZE_METAVAR, size_type
from scaseg.data.datasets import open_dataset
from scaseg.data.metrics import label_agreement
from scaseg.metadata import ModelInfo, read_onnx_metadata

from perf_measure import in_blocks


def fp32_model(spec: str, imgsz: tuple[int, int], work: Path) -> tuple[Path, Optional[tuple[int, int]]]:
    """The fp32 ONNX to measure (given, or exported at ``imgsz``) and the input size its checkpoint stores."""
    if spec.endswith(".onnx"):
        return Path(spec), None
    out = work / "model.fp32.onnx"
    if Path(spec).is_file():
        import scaseg

        _, info = scaseg.load_model(spec)
        cmd = [sys.executable, "-c", "from scaseg.export.cli import main; main()", spec, "-o", str(out),
               "--imgsz", f"{imgsz[0]}x{imgsz[1]}"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return out, (tuple(info.input_size) if info.input_size else None)  # type: ignore[return-value]
    import torch

    import scaseg
    from scaseg.export.onnx_export import ExportOptions, to_onnx

    torch.manual_seed(0)
    model = scaseg.build(spec, num_classes=19).eval()
    proto, _ = to_onnx(model, ModelInfo(variant=spec, num_classes=19, input_size=imgsz), ExportOptions(imgsz=imgsz))
    onnx.save(proto, str(out))
    print(f"note: {spec} is untrained: latency is meaningful, mIoU and agreement are not", file=sys.stderr)
    return out, None


def clock(kind: str, threads: int) -> Callable[[], float]:
    if kind == "cpu":
        if threads != 1:
            raise SystemExit("--clock cpu needs --threads 1 (ONNX Runtime then computes on the calling thread)")
        return time.thread_time
    return time.perf_counter


def predictions(sess: ort.InferenceSession, batches: list[np.ndarray]) -> list[np.ndarray]:
    i, o = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    return [np.argmax(sess.run([o], {i: b})[0], axis=1) for b in batches]


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return 100.0 * label_agreement(a, b)


def scored(preds: list[np.ndarray], held: data.HeldOut, num_classes: int) -> float:
    """mIoU of per-batch predictions as scaseg-bench scores them (at each image's source size)."""
    return miou(held.to_source(preds, num_classes), held.labels, num_classes) if held.labels else float("nan")


def ort_quantize_static(fp32: Path, calib: list[np.ndarray], input_name: str, out: Path) -> onnx.ModelProto:
    """ONNX Runtime's own quantize_static (QDQ, symmetric int8, per-channel): the issue's 0.64x reference."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self) -> Any:
            b = next(self.it, None)
            return None if b is None else {input_name: b}

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it warns once per LayerNorm weight about per-channel axes
    try:
        quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    finally:
        root.setLevel(level)
    return onnx.load(str(out))


def placement_variants() -> dict[str, int8.Placement]:
    """The shipped placements and the choices that shaped the cpu one, each one step away from it."""
    cpu = int8.PLACEMENTS["cpu"]
    return {
        "cpu (shipped)": cpu,
        "cpu, erf-GELU kept (no rewrite)": replace(cpu, fuse_gelu=False),
        "cpu, no depthwise": replace(cpu, depthwise=False),
        "cpu, every depthwise kernel": replace(cpu, depthwise_kernels=None),
        "cpu, Concat inputs not quantized": replace(cpu, int8_movement=()),
        "cpu, Concat + Resize inputs": replace(cpu, int8_movement=("Concat", "Resize")),
        "cpu, stem conv too (min_features 0)": replace(cpu, min_features=0),
        "cpu, min_features 128": replace(cpu, min_features=128),
        "cpu, all pairs as one shared Q (no single_use)": replace(cpu, single_use=False),
        "first cpu placement (no GELU/dw/Concat, min 128)": replace(
            cpu, fuse_gelu=False, depthwise=False, int8_movement=(), min_features=128),
        "tensorrt (shipped; Q/DQ on weighted-op inputs)": int8.PLACEMENTS["tensorrt"],
    }


def placement_tables(args: argparse.Namespace, model: onnx.ModelProto, info: ModelInfo, fp32_path: Path,
                     calib_x: list[np.ndarray], held: data.HeldOut, num_val: int, now: Callable[[], float]) -> None:
    """Tables 1 and 2: placement choices (latency, agreement) and calibration methods (mIoU), no guard."""
    names = int8.tensors_to_calibrate(model)
    stats = collect_stats(runner(model, names), calib_x, names)
    thresholds = stats.thresholds(args.method)
    models = {"fp32 (as exported)": model, "fp32 + cpu rewrites (GELU fused)": int8.prepare(model, thresholds, "cpu")[0]}
    for label, placement in placement_variants().items():
        int8.PLACEMENTS["_bench"] = replace(placement, target="_bench")
        try:
            models[label] = int8.quantize(model, thresholds, "_bench")
        finally:
            del int8.PLACEMENTS["_bench"]
    models["onnxruntime quantize_static (QDQ s8, per-channel)"] = ort_quantize_static(
        fp32_path, calib_x[:8], info.input_name, fp32_path.with_name("ort_quantize_static.onnx"))
    sessions = {k: make_session(m, threads=args.threads) for k, m in models.items()}
    ms = in_blocks(sessions, held.batches[0], args.runs, now=now)
    ref = predictions(sessions["fp32 (as exported)"], held.batches)
    base = ms["fp32 (as exported)"]
    print(f"\n## Q/DQ placements, {args.method} thresholds from {len(calib_x)} batches, no guard")
    print(f"| {'model':50s} | {'ms':>7s} | {'vs fp32':>7s} | {'argmax = fp32':>13s} | quantized ops |")
    print(f"|{'-' * 52}|{'-' * 9}|{'-' * 9}|{'-' * 15}|---------------|")
    for k, m in models.items():
        counts = ", ".join(f"{o} {c}" for o, c in sorted(int8.count_quantized(m).items())) or "-"
        print(f"| {k:50s} | {ms[k]:7.1f} | {base / ms[k]:6.2f}x | {agreement(predictions(sessions[k], held.batches), ref):12.2f}% "
              f"| {counts} |")
    del sessions, models

    # 1b) Calibration methods on the same statistics (no guard), scored on the val split.
    print(f"\n## Calibration methods, no guard: mIoU on {num_val} val images (fp32 "
          f"{scored(ref, held, info.num_classes):.2f})")
    print("| placement | " + " | ".join(METHODS) + " |")
    print("|---|" + "---|" * len(METHODS))
    for target in int8.PLACEMENTS:
        row = []
        for method in METHODS:
            sess = make_session(int8.quantize(model, stats.thresholds(method), target), threads=args.threads)
            row.append(f"{scored(predictions(sess, held.batches), held, info.num_classes):.2f}" if held.labels else "-")
        print(f"| {target} | " + " | ".join(row) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--data", default=None)
    ap.add_argument("--imgsz", type=size_type, default=(512, 512), metavar=SIZE_METAVAR)
    ap.add_argument("--calib-num", type=int, default=32)
    ap.add_argument("--val-num", type=int, default=16)
    ap.add_argument("--method", default="percentile")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--max-miou-drop", type=float, default=1.0)
    ap.add_argument("--skip-shipped", action="store_true", help="tables 1 and 2 only (no guard, no fp16)")
    ap.add_argument("--only-shipped", action="store_true", help="table 3 only (fewer sessions alive while timing)")
    args = ap.parse_args()
    imgsz = (int(args.imgsz[0]), int(args.imgsz[1]))
    now = clock(args.clock, args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        work = Path(tmp)
        fp32_path, stored_size = fp32_model(args.model, imgsz, work)
        model, info = load_fp32(str(fp32_path))
        root = args.data
        if root is None:
            from scaseg.data.synth import write_dataset

            root = str(work / "synth")
            write_dataset(root, num=args.calib_num + args.val_num, size=stored_size or info.input_size or imgsz,
                          val_fraction=args.val_num / (args.calib_num + args.val_num), video_frames=0, progress=False)
        val = open_dataset(root, split="val")
        val_items = [data.Item(Path(p), val, i) for i, p in enumerate(val.image_paths)][: args.val_num]
        held = data.heldout_data(val_items, info)
        cset = data.open_calibration(root, args.calib_num)
        calib_x = list(data.batches(cset.calib, info))
        print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, {os.cpu_count()} "
              f"cores; onnxruntime {ort.__version__}; model {args.model} ({info.variant}), input "
              f"{tuple(held.batches[0].shape)}; data {root} (image size {stored_size or info.input_size or imgsz}); "
              f"{args.threads} thread(s), {args.clock} clock, median of {args.runs} runs (interleaved blocks of 3)")

        # 1) Placement choices on the same thresholds (no guard): what each costs or saves.
        if not args.only_shipped:
            placement_tables(args, model, info, fp32_path, calib_x, held, len(val_items), now)
        if args.skip_shipped:
            return

        # 3) What make_precision ships (guard on), scored on the labelled val split.
        outs: dict[str, tuple[Path, dict]] = {}
        for target in ("cpu", "tensorrt"):
            out = work / f"model.int8.{target}.onnx"
            start = time.perf_counter()
            s = make_precision(str(fp32_path), str(out), "int8", calib_dir=root, calib_num=args.calib_num,
                               method=args.method, target=target, max_miou_drop=args.max_miou_drop)
            outs[f"int8 {target}"] = (out, {**s, "seconds": time.perf_counter() - start})
        out = work / "model.fp16.onnx"
        outs["fp16"] = (out, make_precision(str(fp32_path), str(out), "fp16", calib_dir=root))
        shipped = {"fp32": make_session(model, threads=args.threads)}
        shipped.update({k: make_session(onnx.load(str(p)), threads=args.threads) for k, (p, _) in outs.items()})
        ms = in_blocks(shipped, held.batches[0], args.runs, now=now)
        preds = {k: predictions(s, held.batches) for k, s in shipped.items()}
        print(f"\n## Shipped models (make_precision, --max-miou-drop {args.max_miou_drop}), mIoU on {len(val_items)} "
              f"labelled val images")
        print(f"| {'model':13s} | {'ms':>7s} | {'vs fp32':>7s} | {'mIoU':>6s} | {'drop':>5s} | {'argmax = fp32':>13s} | notes |")
        print(f"|{'-' * 15}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 7}|{'-' * 15}|-------|")
        m0 = scored(preds["fp32"], held, info.num_classes)
        for k in shipped:
            m = scored(preds[k], held, info.num_classes)
            note = ""
            if k.startswith("int8"):
                s = outs[k][1]
                saved = read_onnx_metadata(onnx.load(str(outs[k][0])).metadata_props, outs[k][0])
                nodes = len(saved.extra["calibration"]["kept_float_nodes"])
                note = f"ops {s['quantized_ops']}; kept float: {s['kept_float_blocks']} ({nodes} nodes); guard {s['miou_fp32']} -> {s['miou_int8']} on held-out; made in {s['seconds']:.0f} s"
            elif k == "fp16":
                s = outs[k][1]
                note = f"max abs logit error {s['max_abs_error']}; fp32 ops: {s['kept_fp32_ops']}, +{s['kept_fp32_nodes']} measured nodes"
            print(f"| {k:13s} | {ms[k]:7.1f} | {ms['fp32'] / ms[k]:6.2f}x | {m:6.2f} | {round(m0 - m, 2) + 0.0:5.2f} | "
                  f"{agreement(preds[k], preds['fp32']):12.2f}% | {note} |")


if __name__ == "__main__":
    main()
