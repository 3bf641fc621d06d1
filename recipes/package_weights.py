"""Turn a finished scaseg-train run into a shippable checkpoint: float16 weights plus a provenance JSON, and the
int8 ONNX export of those weights that scaseg-infer and scaseg-bench run when no model is named.

Called by recipes/cpu_synth.sh. The float16 file is evaluated again on the validation split, so the JSON
holds both the trainer's own final mIoU (float32 weights) and the mIoU of the file that is shipped; the ONNX
file is made with scaseg-export (int8, calibrated on the run's train split) and scored by the runtime.

    python recipes/package_weights.py --run RUN_DIR --data DATA_DIR -o NAME.pth --train-log LOG \
        --command "scaseg-train ..." --synth-seconds S --train-seconds T
    python recipes/package_weights.py --onnx-only --data DATA_DIR -o NAME.pth   # redo NAME.int8.onnx alone
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

import scaseg
from scaseg.data.datasets import open_dataset
from scaseg.errors import ScasegError
from scaseg.fileio import atomic_path
from scaseg.train.loop import STATE_FILE, evaluate

FINAL = re.compile(r"final val mIoU ([0-9.]+)%")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the run ran on, for the provenance file."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "torch": torch.__version__, "gpu": None}


def package(args: argparse.Namespace) -> dict:
    run = Path(args.run)
    state = torch.load(run / STATE_FILE, map_location="cpu", weights_only=True)
    cfg, history = state["config"], state["history"]
    if not history or history[-1]["iteration"] != state["iteration"]:
        raise ScasegError(f"{run} has no validation at its last iteration; train with --val-interval")
    last = history[-1]
    found = FINAL.search(Path(args.train_log).read_text())
    if not found:
        raise ScasegError(f"{args.train_log} holds no 'final val mIoU' line")
    model, info = scaseg.load_model(run / "last.pth")
    data = open_dataset(args.data, cfg["dataset"], cfg["val_split"])
    names = list(data.classes)

    out = Path(args.out)
    # The shipped file's input size is the one it was validated at (the trainer stores the crop): that is the size
    # the runtime and scaseg-export then use by default.
    val_size = tuple(cfg["val_size"]) if cfg.get("val_size") else None
    scaseg.save_checkpoint(model, out, class_names=info.class_names, palette=info.palette,
                           input_size=val_size or info.input_size,
                           extra={**info.extra, "recipe": args.recipe, "weights_dtype": "float16"}, half=True)
    shipped, info = scaseg.load_model(out)
    check = evaluate(shipped, data, size=val_size, progress=False)

    iou = {names[i]: round(v, 4) for i, v in enumerate(last["iou"]) if v is not None}
    meta = {
        "name": out.stem, "file": out.name, "bytes": out.stat().st_size,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "variant": cfg["variant"], "num_classes": info.num_classes, "input_size": list(info.input_size or []),
        "weights_dtype": "float16 parameters, float32 buffers (scaseg.load_model returns a float32 model)",
        "recipe": args.recipe, "command": args.command, "seed": cfg["seed"], "iterations": state["iteration"],
        "train_config": {k: cfg.get(k) for k in ("batch", "crop", "scale_range", "lr", "head_lr_mult", "weight_decay",
                                                  "warmup", "power", "val_size", "class_weight", "ohem_thresh",
                                                  "ohem_min_kept", "logit_adjust", "logit_adjust_images", "model_kwargs",
                                                  "threads", "workers")},
        "logit_adjustment": state.get("logit_adjustment"),
        "dataset": json.loads((Path(args.data) / "synth.json").read_text()) if (Path(args.data) / "synth.json").is_file() else None,
        "wall_time_s": {"synthesis": round(args.synth_seconds, 1), "training": round(args.train_seconds, 1),
                        "total": round(args.synth_seconds + args.train_seconds, 1)},
        "train_seconds": round(args.train_seconds, 1),
        "final_val_miou": round(float(found.group(1)) / 100, 4),
        "final_val_pixel_acc": round(last["pixel_acc"], 4),
        "per_class_iou": iou,
        "shipped_val_miou": round(float(check["miou"]), 4),
        "val_images": len(data),
        "validation_history": [{"iteration": h["iteration"], "miou": round(h["miou"], 4)} for h in history],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "load_average_start": args.load_start, "load_average_end": _loadavg()},
    }
    if not math.isclose(meta["shipped_val_miou"], meta["final_val_miou"], abs_tol=0.005):
        print(f"package_weights: warning: the float16 file scores {100 * check['miou']:.2f}% mIoU, "
              f"the float32 weights {found.group(1)}%", file=sys.stderr)
    meta["onnx"] = package_onnx(out, args.data)
    _write_meta(out.with_suffix(".json"), meta)
    return meta


ONNX_CALIB_NUM = 64


def package_onnx(checkpoint: Path, data: str) -> dict:
    """NAME.pth -> NAME.int8.onnx with scaseg-export, scored on the val split by the runtime; returns its provenance."""
    from scaseg.runtime.backends import open_backend
    from scaseg.runtime.bench import evaluate as runtime_evaluate, open_eval_dataset
    from scaseg.runtime.predictor import Predictor

    onnx_path = checkpoint.with_name(checkpoint.stem + ".int8.onnx")
    args = [str(checkpoint), "--precision", "int8", "--calib", data, "--calib-num", str(ONNX_CALIB_NUM),
            "-o", str(onnx_path), "-q"]
    subprocess.run([sys.executable, "-c", "from scaseg.export.cli import main; main()", *args], check=True,
                   stdout=subprocess.DEVNULL)
    with open_backend(onnx_path, device="cpu") as backend:
        predictor = Predictor(backend)
        scored = runtime_evaluate(predictor, open_eval_dataset(data, "cityscapes", "val", backend.info), progress=False)
    synth = Path(data) / "synth.json"
    scenes = json.loads(synth.read_text()) if synth.is_file() else None
    calibration = f"{ONNX_CALIB_NUM} images of the train split of {data}" + (
        f" (scaseg-synth seed {scenes['seed']}, {scenes['num_train']} train + {scenes['num_val']} val scenes of "
        f"{scenes['size'][0]}x{scenes['size'][1]})" if scenes else "")
    return {"file": onnx_path.name, "bytes": onnx_path.stat().st_size,
            "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            "command": " ".join(["scaseg-export", *args]), "calibration": calibration,
            "val_miou": round(scored["miou"], 4),
            "per_class_iou": {n: round(v, 4) for n, v in zip(scored["class_names"], scored["iou"]) if v is not None}}


def _write_meta(path: Path, meta: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx-only", action="store_true", help="only (re)make NAME.int8.onnx from an existing NAME.pth")
    p.add_argument("--run", help="scaseg-train output folder")
    p.add_argument("--data", required=True, help="dataset root the run trained on")
    p.add_argument("-o", "--output", dest="out", required=True, help="checkpoint to write (NAME.pth; NAME.json beside it)")
    p.add_argument("--train-log", help="scaseg-train's printed output")
    p.add_argument("--command", help="the commands that made the run, as typed")
    p.add_argument("--recipe", default="recipes/cpu_synth.sh")
    p.add_argument("--synth-seconds", type=float)
    p.add_argument("--train-seconds", type=float)
    p.add_argument("--load-start", default="")
    args = p.parse_args()
    needed = [] if args.onnx_only else ["run", "train_log", "command", "synth_seconds", "train_seconds"]
    missing = [f"--{n.replace('_', '-')}" for n in needed if getattr(args, n) is None]
    if missing:
        p.error(f"the following arguments are required: {', '.join(missing)}")
    try:
        if args.onnx_only:
            out = Path(args.out)
            meta = json.loads(out.with_suffix(".json").read_text())
            meta["onnx"] = package_onnx(out, args.data)
            _write_meta(out.with_suffix(".json"), meta)
            print(f"package_weights: {meta['onnx']['file']} ({meta['onnx']['bytes'] / 2**20:.1f} MiB); "
                  f"val mIoU {100 * meta['onnx']['val_miou']:.2f}%")
            return
        meta = package(args)
    except ScasegError as exc:
        print(f"package_weights: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"package_weights: {args.out} ({meta['bytes'] / 2**20:.1f} MiB, float16); "
          f"shipped file val mIoU {100 * meta['shipped_val_miou']:.2f}%")


if __name__ == "__main__":
    main()
