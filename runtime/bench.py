"""scaseg-bench: latency percentiles and FPS (model-only and end-to-end), and mIoU on a dataset, for one or more models."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import typer

from scaseg import DEFAULT_MODEL_FILE, default_model
from scaseg.cli import make_app, parse_imgsz, quiet_option
from scaseg.runtime.backends import ModelFile, RunSettings, model_file, open_backend
from scaseg.errors import ScasegError, run_cli, version_option
from scaseg.memory import check_memory
from scaseg.fileio import atomic_path, check_output, refuse_overwrite, same_path
from scaseg.metadata import ModelInfo
from scaseg.runtime.backends.threads import apply_auto_threads
from scaseg.runtime.memory import peak_rss_mb, reset_peak_rss
from scaseg.runtime.options import (BackendName, MemoryMode, backend_option, batch_option, device_option, imgsz_option,
                                    memory_option, model_name_option, server_option, threads_option, SERVER_OWNS)
from scaseg.runtime.predictor import Predictor
from scaseg.data.images import decode_image, read_encoded
from scaseg.runtime.preprocess import resize_nearest
from scaseg.runtime.timing import summarize

app = make_app(__doc__)

# A 720p frame stands in for "an image from the camera" when no dataset is given.
SAMPLE_HW = (720, 1280)


def sample_jpeg(hw: tuple[int, int] = SAMPLE_HW, seed: int = 0) -> bytes:
    """A deterministic photo-like JPEG (smoothed noise) used to time decoding when no dataset is given."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), (0, 0), 3)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def _timed(fn: Any, warmup: int, runs: int, desc: str, progress: bool) -> list[float]:
    from scaseg.progress import progress as bar

    for _ in range(warmup):
        fn()
    laps = []
    for _ in bar(range(runs), desc=desc, unit="run", file=sys.stderr, leave=False, disable=not progress):
        t0 = time.perf_counter()
        fn()
        laps.append(time.perf_counter() - t0)
    return laps


def check_batch_memory(predictor: Predictor) -> None:
    """Refuse, before the first run, a --batch whose input and output batches alone cannot fit in memory."""
    h, w = predictor.size or SAMPLE_HW  # a model that runs at the image's own size times the 720p sample
    n, info = predictor.batch, predictor.info
    out = 4 * max(1, info.num_classes) if info.output == "logits" else 8  # float32 logits (C, H, W), or int64 labels
    check_memory(n * h * w * (4 * 3 + out), f"--batch {n} at {h}x{w} (float32 input and {info.output} output)",
                 "; use a smaller --batch (or --imgsz)")


def time_model(predictor: Predictor, image_bytes: bytes, warmup: int, runs: int, progress: bool = True) -> dict[str, Any]:
    """Model-only (inference on a ready batch) and end-to-end (decode + preprocess + infer + postprocess) timings."""
    n = predictor.batch
    image = decode_image(image_bytes)
    tensor, _ = predictor.prepare(image)
    batch = np.ascontiguousarray(np.stack([tensor] * n))
    backend = predictor.backend

    def model_only() -> None:
        backend.infer(batch)

    def end_to_end() -> None:
        prepared = [predictor.prepare(decode_image(image_bytes)) for _ in range(n)]
        outputs = predictor.run([t for t, _ in prepared])
        for out, (_, geom) in zip(outputs, prepared):
            predictor.finish(out, geom)

    model = summarize(_timed(model_only, warmup, runs, "model-only", progress), n)
    e2e = summarize(_timed(end_to_end, min(warmup, 3), runs, "end-to-end", progress), n)
    return {**model, "end_to_end": e2e, "input_shape": list(batch.shape), "input_dtype": str(batch.dtype),
            "source_hw": list(image.shape[:2])}


def open_eval_dataset(data: str, kind: str, split: str, info: ModelInfo) -> Any:
    """Open the dataset to score a model on; a plain labelled folder without classes.txt takes the model's classes."""
    from scaseg.data.datasets import detect_kind, open_dataset

    root = Path(data).expanduser()
    resolved = detect_kind(root) if kind == "auto" and root.is_dir() else kind
    classes = info.class_names if resolved == "folder" and not (root / "classes.txt").is_file() else None
    ds = open_dataset(root, kind=resolved, split=split, classes=classes)
    if len(ds) == 0:
        raise ScasegError(f"the {split} split of the dataset at {data} is empty")
    if ds.num_classes != info.num_classes:
        raise ScasegError(f"the {ds.kind} dataset at {data} has {ds.num_classes} classes but the model predicts "
                          f"{info.num_classes}")
    return ds


def evaluate(predictor: Predictor, ds: Any, limit: Optional[int] = None, progress: bool = True) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU of one model on a dataset split (labels at full resolution)."""
    from scaseg.data.metrics import SegMetrics
    from scaseg.progress import progress as bar

    info = predictor.info
    total = len(ds) if limit is None else min(limit, len(ds))
    metrics = SegMetrics(info.num_classes, ignore_index=getattr(ds, "ignore_index", 255))
    for i in bar(range(total), desc="mIoU", unit="img", file=sys.stderr, leave=False, disable=not progress):
        sample = ds[i]
        if sample.label is None:
            raise ScasegError(f"the image {sample.name} of {ds.root} has no label, so mIoU cannot be measured")
        pred = predictor(sample.image)
        label = sample.label if sample.label.shape == pred.shape else resize_nearest(sample.label, pred.shape)
        metrics.update(pred, label)
    result = metrics.compute()
    iou = [None if (v is None or (isinstance(v, float) and math.isnan(v))) else float(v) for v in result["iou"]]
    return {"miou": float(result["miou"]), "pixel_acc": float(result["pixel_acc"]), "iou": iou,
            "class_names": list(ds.classes), "images": total, "dataset": ds.kind, "split": ds.split}


@dataclass(frozen=True)
class BenchRequest:
    """What scaseg-bench was asked, parsed and checked once at its edge; bench_one trusts it."""

    settings: RunSettings  # device, threads (None: auto) and memory
    imgsz: Optional[tuple[int, int]]
    batch: Optional[int]
    warmup: int
    runs: int
    data: Optional[str]
    dataset: str
    split: str
    limit: Optional[int]
    progress: bool
    server: Optional[str] = None  # --server URL (checked by parse_server_url): time a Triton server instead
    model_name: Optional[str] = None  # the served model; None: the server's only one
    streams: int = 1  # concurrent client streams against the server


def bench_one(model: ModelFile, backend: str, request: BenchRequest) -> dict[str, Any]:
    """Benchmark one model file on one backend; returns the JSON record (see docs/runtime.md).

    ``peak_rss_mb`` is the process's peak RSS while this model was loaded, timed and scored, when the caller reset
    the high-water mark before (reset_peak_rss); else the process's peak so far.
    """
    path, progress, data = model.path, request.progress, request.data
    with open_backend(model, backend, settings=request.settings) as be:
        # One --imgsz across a mixed list: it applies to the dynamic models; static ones keep their size.
        predictor = Predictor(be, request.imgsz, request.batch, keep_static_size=True)
        if predictor.imgsz_ignored:
            assert predictor.size is not None
            print(f"scaseg-bench: {os.path.basename(path)} has a fixed {predictor.size[0]}x{predictor.size[1]} input; "
                  "--imgsz ignored for it", file=sys.stderr)
        check_batch_memory(predictor)
        chosen = apply_auto_threads(be, predictor.size, predictor.batch)
        if progress and chosen != "-":
            print(f"scaseg-bench: {os.path.basename(path)}: threads {chosen}", file=sys.stderr)
        record: dict[str, Any] = {
            "file": os.path.basename(path), "path": os.path.abspath(path), "backend": be.name, "device": be.device,
            "precision": be.precision, "variant": be.info.variant, "output": be.info.output,
            "size_mb": os.path.getsize(path) / 2**20, "batch": predictor.batch, "threads": be.threads,
            "kept_float": kept_float(be.info),
        }
        ds = open_eval_dataset(data, request.dataset, request.split, be.info) if data is not None else None
        # End-to-end timing decodes a real image of the dataset when there is one.
        image_bytes = read_encoded(ds.image_paths[0]) if ds is not None else sample_jpeg()
        record.update(time_model(predictor, image_bytes, request.warmup, request.runs, progress))
        if ds is not None:
            record.update(evaluate(predictor, ds, request.limit, progress))
        record["peak_rss_mb"] = peak_rss_mb()
    return record


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(records: list[dict[str, Any]]) -> str:
    """One row per model: file, backend, precision, size, input, mIoU, ms and FPS (model-only and end-to-end)."""
    head = ["Model", "Backend", "Device", "Precision", "Size (MB)", "Input", "mIoU", "ms/img", "FPS", "E2E ms/img", "E2E FPS",
            "Peak RSS (MB)"]
    rows = []
    for r in records:
        shape = r["input_shape"]
        raw = r.get("input_dtype") == "uint8"  # a raw-frame model: uint8 frames (B, H, W, 3)
        h, w = shape[1:3] if raw else shape[2:4]
        e2e = r["end_to_end"]
        rows.append([
            r["file"], r["backend"], r["device"], r["precision"], f"{r['size_mb']:.1f}",
            f"{shape[0]}x{h}x{w}{' uint8' if raw else ''}", _fmt(None if r.get("miou") is None else 100 * r["miou"], ".2f"),
            f"{r['latency_ms']['mean'] / r['batch']:.2f}", f"{r['fps']:.1f}",
            f"{e2e['latency_ms']['mean'] / r['batch']:.2f}", f"{e2e['fps']:.1f}", _fmt(r.get("peak_rss_mb"), ".0f"),
        ])
    return "\n".join([_align(head, rows), *(_kept_float_note(r) for r in records if r.get("kept_float"))])


def kept_float(info: ModelInfo) -> Optional[dict[str, Any]]:
    """What the int8 accuracy guard kept float (scaseg-export's ``calibration.kept_float``), or None: none, or
    figures that are not numbers (the metadata is the file's word, not ours)."""
    calibration = info.extra.get("calibration") if isinstance(info.extra, dict) else None
    kept = calibration.get("kept_float") if isinstance(calibration, dict) else None
    if not isinstance(kept, dict):
        return None

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0

    needed, timed = ("blocks_float", "blocks", "macs_float"), ("ms", "ms_all_quantized")  # timed: cpu placement only
    if not all(number(kept.get(k)) for k in needed) or not all(kept.get(k) is None or number(kept.get(k)) for k in timed):
        return None
    return {k: kept.get(k) for k in needed + timed}


def _kept_float_note(record: dict[str, Any]) -> str:
    """``model.int8.onnx: int8 with 20/44 blocks float (41% of MACs in float; 1.38x ...)``: under the table."""
    kept = record["kept_float"]
    cost = (f"; {kept['ms'] / kept['ms_all_quantized']:.2f}x the time of every block quantized, at export"
            if kept.get("ms") and kept.get("ms_all_quantized") else "")
    return (f"{record['file']}: {record['precision']} with {kept['blocks_float']}/{kept['blocks']} blocks float "
            f"(the accuracy guard's choice: {100 * kept['macs_float']:.1f}% of MACs in float{cost})")


def _align(head: list[str], rows: list[list[Any]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned (figures)."""
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [head] + rows]
    return "\n".join(lines)


def format_per_class(records: list[dict[str, Any]]) -> str:
    """IoU (%) of every class, one column per model, and the weakest class of each model: what mIoU averages away."""
    scored = [r for r in records if r.get("iou") is not None]
    if not scored:
        return ""
    names = scored[0]["class_names"]
    rows = [[name] + [_fmt(None if r["iou"][k] is None else 100 * r["iou"][k], ".2f") for r in scored]
            for k, name in enumerate(names) if any(r["iou"][k] is not None for r in scored)]
    weakest = []
    for r in scored:
        present = [(v, names[k]) for k, v in enumerate(r["iou"]) if v is not None]
        weakest.append(f"{min(present)[1]} {100 * min(present)[0]:.2f}" if present else "-")
    return _align(["IoU (%)"] + [r["file"] for r in scored], rows + [["weakest"] + weakest])


CSV_FIELDS = ["file", "backend", "device", "precision", "size_mb", "batch", "input_shape", "fps", "latency_mean_ms",
              "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "e2e_fps", "e2e_latency_mean_ms",
              "e2e_latency_p50_ms", "e2e_latency_p90_ms", "e2e_latency_p99_ms", "miou", "pixel_acc", "peak_rss_mb"]


def to_csv(records: list[dict[str, Any]]) -> str:
    """The table as CSV (one row per model; percentiles in milliseconds per call)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = {k: r.get(k) for k in ("file", "backend", "device", "precision", "batch", "fps", "miou", "pixel_acc",
                                     "peak_rss_mb")}
        row["size_mb"] = round(r["size_mb"], 3)
        row["input_shape"] = "x".join(str(d) for d in r["input_shape"])
        for prefix, part in (("", r), ("e2e_", r["end_to_end"])):
            row[f"{prefix}fps"] = round(part["fps"], 3)
            for q in ("mean", "p50", "p90", "p99"):
                row[f"{prefix}latency_{q}_ms"] = round(part["latency_ms"][q], 4)
        writer.writerow(row)
    return buf.getvalue()


def _write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@app.command()
def bench(
    models: list[str] = typer.Argument(None, metavar="[MODEL]...", help="Model files (.onnx, .trt/.engine/.plan, .pth) to compare.", show_default=f"the shipped {DEFAULT_MODEL_FILE}"),
    output: list[Path] = typer.Option([], "-o", "--output", metavar="FILE.json|FILE.csv", show_default="print the table only",
                                      help="Also write the results here: .json (every figure) or .csv (the table); repeat for both."),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Untimed runs first."),
    runs: int = typer.Option(50, "--runs", "-n", min=1, help="Timed runs."),
    batch: Optional[int] = batch_option("Images"),
    threads: str = threads_option(),
    device: str = device_option(),
    backend: list[BackendName] = backend_option(repeat=True),  # type: ignore[valid-type]
    memory: MemoryMode = memory_option(),  # type: ignore[valid-type]
    imgsz: Optional[str] = imgsz_option(),
    data: Optional[str] = typer.Option(None, "--data", metavar="DIR", help="Dataset root: adds mIoU, pixel accuracy and per-class IoU.", show_default="no accuracy, time only"),
    dataset: str = typer.Option("auto", "--dataset", metavar="auto|cityscapes|ade20k|voc|cocostuff|folder", help="Dataset layout (auto: detected from the folder)."),
    split: str = typer.Option("val", "--split", help="Dataset split."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate at most N images.", show_default="the whole split"),
    per_class: bool = typer.Option(False, "--per-class", help="With --data: also print the IoU of every class and the weakest class of each model."),
    server: Optional[str] = server_option("Time concurrent clients (a connection each, one frame per request, the synthetic 720p frame) of", "the table adds the server's own statistics; the model, dataset, batch, " + SERVER_OWNS),
    model_name: Optional[str] = model_name_option(),
    streams: int = typer.Option(1, "--streams", min=1, max=256, help="With --server: concurrent client streams (threads, a connection each, one frame per request)."),
    quiet: bool = quiet_option(),
    version: bool = version_option("scaseg-bench"),
) -> None:
    """Benchmark MODELS (on each --backend) and print one table across them."""
    if server is not None or model_name is not None or streams != 1:
        given = {"MODEL": bool(models), "--backend": any(b.value != "auto" for b in backend), "--device": device != "auto",
                 "--threads": threads != "auto", "--imgsz": imgsz is not None, "--batch": batch is not None,
                 "--data": data is not None}
        _bench_server(server, BenchRequest(RunSettings(), None, None, warmup, runs, None, dataset, split, None,
                                           not quiet, server, model_name, streams), given, output)
        return
    if not models:
        models = [default_model()]
        print(f"scaseg-bench: no model given: timing the shipped default {models[0]} "
              "(trained on synthetic street scenes only)", file=sys.stderr)
    files = [model_file(path) for path in models]  # fail on a typo before spending minutes on the models before it
    if data is not None and not Path(data).expanduser().is_dir():
        raise ScasegError(f"dataset folder not found: {data}")
    request = BenchRequest(RunSettings.parse(device, threads, memory.value), parse_imgsz(imgsz), batch, warmup, runs,
                           data, dataset, split, limit, progress=not quiet)
    writers = {".json": "json", ".csv": "csv"}
    for dest in output:
        if dest.suffix.lower() not in writers:
            raise ScasegError(f"-o {dest}: expected a .json or .csv file name")
    # The outputs too, before minutes of benchmarking: writable, not an input, not each other.
    refuse_overwrite(output, [*models, data])
    for i, dest in enumerate(output):
        if any(same_path(dest, other) for other in output[:i]):
            raise ScasegError(f"-o {dest} is given twice; give each output its own file")
        check_output(dest)
    records = []
    backends = list(dict.fromkeys(b.value for b in backend)) or ["auto"]  # each once, in the order given
    no_reset: Optional[str] = None
    for mf in files:
        for name in backends:
            if not quiet:
                print(f"scaseg-bench: {mf.path}" + ("" if name == "auto" else f" ({name})"), file=sys.stderr)
            no_reset = reset_peak_rss()  # peak_rss_mb per model, not the peak of all the models before it
            records.append(bench_one(mf, name, request))
    print(format_table(records))
    if no_reset is not None and len(records) > 1:
        print(f"scaseg-bench: the peak RSS cannot be reset between models here ({no_reset}): each row's "
              "Peak RSS is the process's peak up to the end of that row", file=sys.stderr)
    if per_class:
        if data is None:
            print("scaseg-bench: --per-class needs --data (no accuracy was measured)", file=sys.stderr)
        else:
            print("\n" + format_per_class(records))
    settings = {"warmup": warmup, "runs": runs, "batch": batch, "threads": threads, "device": device,
                "backends": backends, "memory": memory.value,
                "peak_rss": "per model" if no_reset is None else f"since the process started ({no_reset})",
                "imgsz": request.imgsz, "data": data, "dataset": dataset, "split": split, "limit": limit,
                "sample": "dataset image" if data else f"synthetic {SAMPLE_HW[0]}x{SAMPLE_HW[1]} JPEG"}
    for dest in output:
        if writers[dest.suffix.lower()] == "json":
            _write_text(str(dest), json.dumps({"settings": settings, "models": records}, indent=2) + "\n")
        else:
            _write_text(str(dest), to_csv(records))


def _bench_server(url: Optional[str], request: BenchRequest, given: dict[str, bool], output: list[Path]) -> None:
    """scaseg-bench --server: the options checked here, then runtime/serve_bench.py times the server."""
    from scaseg.runtime.remote import check_server_options, open_server
    from scaseg.runtime.serve_bench import format_load, load_test

    if url is None:
        raise ScasegError("--streams and --model-name time a Triton server: add --server URL")
    check_server_options(url, request.model_name, given)
    if any(dest.suffix.lower() != ".json" for dest in output):
        raise ScasegError("with --server, -o takes a .json file (the table has other columns than a model's)")
    refuse_overwrite(output, [])
    for dest in output:
        check_output(dest)
    backend = open_server(url, request.model_name)
    if request.progress:
        print(f"scaseg-bench: {backend.device}: {request.streams} stream(s) x {request.runs} frames", file=sys.stderr)
    record = load_test(backend, url, request.streams, [decode_image(sample_jpeg())] * request.runs, request.warmup)
    print(format_load(record))
    for dest in output:
        _write_text(str(dest), json.dumps({"settings": {"warmup": request.warmup, "runs": request.runs,
                                                        "sample": f"synthetic {SAMPLE_HW[0]}x{SAMPLE_HW[1]} JPEG"},
                                           "server": record}, indent=2) + "\n")


def main() -> None:
    """Console entry point ``scaseg-bench``."""
    run_cli(app, prog="scaseg-bench")


if __name__ == "__main__":
    main()
