"""Turn a finished scaseg-train run into a shippable checkpoint: float16 weights plus a provenance JSON.

Called by recipes/cpu_synth.sh. The float16 file is evaluated again on the validation split, so the JSON
holds both the trainer's own final mIoU (float32 weights) and the mIoU of the file that is shipped.

    python recipes/package_weights.py --run RUN_DIR --data DATA_DIR -o NAME.pth --train-log LOG \
        --command "scaseg-train ..." --synth-seconds S --train-seconds T
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
    scaseg.save_checkpoint(model, out, class_names=info.class_names, palette=info.palette, input_size=info.input_size,
                           extra={**info.extra, "recipe": args.recipe, "weights_dtype": "float16"}, half=True)
    shipped, _ = scaseg.load_model(out)
    val_size = tuple(cfg["val_size"]) if cfg.get("val_size") else None
    check = evaluate(shipped, data, size=val_size, progress=False)

    iou = {names[i]: round(v, 4) for i, v in enumerate(last["iou"]) if v is not None}
    meta = {
        "name": out.stem, "file": out.name, "bytes": out.stat().st_size,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "variant": cfg["variant"], "num_classes": info.num_classes, "input_size": list(info.input_size or []),
        "weights_dtype": "float16 parameters, float32 buffers (scaseg.load_model returns a float32 model)",
        "recipe": args.recipe, "command": args.command, "seed": cfg["seed"], "iterations": state["iteration"],
        "train_config": {k: cfg[k] for k in ("batch", "crop", "scale_range", "lr", "head_lr_mult", "weight_decay",
                                              "warmup", "power", "val_size", "model_kwargs", "threads", "workers")},
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
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="scaseg-train output folder")
    p.add_argument("--data", required=True, help="dataset root the run trained on")
    p.add_argument("-o", "--output", dest="out", required=True, help="checkpoint to write (NAME.pth; NAME.json beside it)")
    p.add_argument("--train-log", required=True, help="scaseg-train's printed output")
    p.add_argument("--command", required=True, help="the commands that made the run, as typed")
    p.add_argument("--recipe", default="recipes/cpu_synth.sh")
    p.add_argument("--synth-seconds", type=float, required=True)
    p.add_argument("--train-seconds", type=float, required=True)
    p.add_argument("--load-start", default="")
    args = p.parse_args()
    try:
        meta = package(args)
    except ScasegError as exc:
        print(f"package_weights: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"package_weights: {args.out} ({meta['bytes'] / 2**20:.1f} MiB, float16); "
          f"shipped file val mIoU {100 * meta['shipped_val_miou']:.2f}%")


if __name__ == "__main__":
    main()
