"""fp32 ONNX -> fp16 or calibrated INT8 ONNX: the calibration options as one checked record, and the conversion.

``Calibration`` holds the options (``check`` is their one check, run at the edge; ``open_images`` lists the int8
images, where int8 is known to need them); ``convert`` takes an fp32 model
already read and options already checked; ``make_precision`` is the library entry point that reads and checks,
then converts.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnx
from scaseg.progress import progress as progress_bar

from scaseg.calibration import data, int8
from scaseg.calibration.fp16 import to_fp16
from scaseg.calibration.guard import BAR, run_guard
from scaseg.calibration.ranges import METHODS, collect_stats
from scaseg.calibration.session import runner
from scaseg.errors import ScasegError
from scaseg.fileio import atomic_path
from scaseg.metadata import PRECISIONS, ModelInfo, read_onnx_model, write_onnx_metadata

#: What a conversion writes: every precision of the metadata but the fp32 it starts from.
CONVERTED = tuple(p for p in PRECISIONS if p != "fp32")
PARITY_IMAGES = 4
INT8_NEEDS_CALIB = "--precision int8 needs --calib DIR, a folder of calibration images"


@dataclass(frozen=True)
class Calibration:
    """How an fp16 / int8 model is made (scaseg-export's --calib* options, --int8-target, --max-miou-drop)."""

    images: Optional[Path] = None  # an image folder or a dataset root; int8 calibrates on it, fp16 checks on it
    num_images: int = 64
    method: str = "percentile"
    target: str = "cpu"  # int8 Q/DQ placement: a key of int8.PLACEMENTS
    max_miou_drop: float = 1.0
    cache_dir: Optional[Path] = None

    def check(self, precision: str) -> None:
        """The one check of these options for ``precision``: one sentence for the first that cannot be honoured."""
        if precision not in CONVERTED:
            raise ScasegError(f"unknown precision {precision!r} (expected {' or '.join(CONVERTED)})")
        if self.method not in METHODS:
            raise ScasegError(f"unknown calibration method {self.method!r} (expected {', '.join(METHODS)})")
        if self.target not in int8.PLACEMENTS:
            raise ScasegError(f"unknown int8 target {self.target!r} (expected {', '.join(int8.PLACEMENTS)})")
        if not self.max_miou_drop >= 0:
            raise ScasegError(f"--max-miou-drop must be >= 0 points, got {self.max_miou_drop}")
        if self.num_images < data.MIN_CALIB_IMAGES:
            raise ScasegError(f"--calib-num must be at least {data.MIN_CALIB_IMAGES}, got {self.num_images}")

    def open_images(self) -> data.CalibrationSet:
        """The images an int8 calibration needs, listed and checked (none read yet); the one "int8 needs --calib"."""
        if self.images is None:
            raise ScasegError(INT8_NEEDS_CALIB)
        return data.open_calibration(str(self.images.expanduser()), self.num_images)


def check_fp32(model: onnx.ModelProto, info: ModelInfo, path: Any) -> onnx.ModelProto:
    """An fp32 model a conversion can start from (its nodes named), or one sentence saying why not."""
    if info.precision != "fp32":
        raise ScasegError(f"{path} is already {info.precision}; calibrate from the fp32 model")
    if not any(op.domain in ("", "ai.onnx") and op.version >= 13 for op in model.opset_import):
        raise ScasegError(f"{path} uses an opset below 13; per-channel Q/DQ needs opset >= 13 (export with --opset 17)")
    return int8.name_nodes(model)


def load_fp32(path: str) -> tuple[onnx.ModelProto, ModelInfo]:
    """Read an fp32 ONNX exported by scaseg-export and its ModelInfo; anything else is refused in one sentence."""
    p = Path(path).expanduser()
    model, info = read_onnx_model(p)
    return check_fp32(model, info, p), info


def _write(model: onnx.ModelProto, info: ModelInfo, out_path: str | Path) -> None:
    write_onnx_metadata(model, info)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))


def _parity_batches(info: ModelInfo, calib_dir: Optional[str]) -> tuple[list[np.ndarray], str]:
    if calib_dir:
        items = data.sample_items(calib_dir, PARITY_IMAGES)
        return list(data.batches(items, info)), f"{len(items)} images from {calib_dir}"
    from scaseg.data.synth import render_scene

    size = info.input_size or (256, 512)
    images = [render_scene(seed, size)[0] for seed in range(PARITY_IMAGES)]
    xs = [data.to_input(im, info)[0] for im in images]
    return list(data._grouped(iter(xs), data.batch_size(info))), f"{len(images)} synthetic street scenes"


def make_precision(fp32_onnx: str, out_path: str, precision: str, *, calib_dir: str | None, calib_num: int = 64,
                   method: str = "percentile", target: str = "cpu", max_miou_drop: float = 1.0,
                   cache_dir: str | None = None) -> dict:
    """Write ``out_path``: ``fp32_onnx`` in fp16, or calibrated INT8 with Q/DQ placed for ``target``; returns a summary.

    method: percentile by default, the one that stayed within a point of fp32 on every measurement in
    docs/precision.md (minmax lost 2.8 points on the cpu placement at 512x512, entropy 0.75 at 128x256).
    """
    calibration = Calibration(Path(calib_dir) if calib_dir else None, calib_num, method, target, max_miou_drop,
                              Path(cache_dir) if cache_dir else None)
    calibration.check(precision)
    model, info = load_fp32(fp32_onnx)
    images = calibration.open_images() if precision == "int8" else None
    return convert(model, info, out_path, precision, calibration, images, Path(fp32_onnx).stem)[2]


def convert(model: onnx.ModelProto, info: ModelInfo, out_path: str | Path, precision: str, calibration: Calibration,
            images: Optional[data.CalibrationSet], stem: str) -> tuple[onnx.ModelProto, ModelInfo, dict]:
    """Write ``out_path`` from an fp32 model that ``check_fp32`` passed, with options that ``Calibration.check``
    passed (and, for int8, the images it opened); returns the written model, its ModelInfo and a summary.

    ``stem`` names the statistics cache file (the fp32 file's name without its suffix).
    """
    assert precision in CONVERTED and info.precision == "fp32"
    if precision == "fp16":
        return _fp16(model, info, out_path, calibration.images)
    assert images is not None
    return _int8(model, info, out_path, images, calibration, stem)


def _fp16(model: onnx.ModelProto, info: ModelInfo, out_path: str | Path,
          calib_dir: Optional[Path]) -> tuple[onnx.ModelProto, ModelInfo, dict]:
    batches, source = _parity_batches(info, str(calib_dir) if calib_dir else None)
    fp16, report = to_fp16(model, batches, info.output)
    summary: dict[str, Any] = {
        "parity_inputs": source,
        "max_abs_error": round(report.max_abs_error, 5),
        "argmax_agreement": f"{100 * report.argmax_agreement:.3f}%",
        "kept_fp32_ops": ", ".join(report.kept_fp32_ops) or "none",
        "kept_fp32_nodes": len(report.kept_fp32_nodes),
    }
    extra = dict(info.extra, fp16={**summary, "kept_fp32_nodes": report.kept_fp32_nodes})
    written = info.replace(precision="fp16", extra=extra)
    _write(fp16, written, out_path)
    return fp16, written, summary


def _int8(model: onnx.ModelProto, info: ModelInfo, out_path: str | Path, cset: data.CalibrationSet,
          calibration: Calibration, stem: str) -> tuple[onnx.ModelProto, ModelInfo, dict]:
    method, target, max_miou_drop, cache_dir = (calibration.method, calibration.target, calibration.max_miou_drop,
                                                calibration.cache_dir)
    graph = int8.prepare(model, {}, target)[0]  # calibrated as rewritten for the target, the graph quantize places pairs in
    names = int8.tensors_to_calibrate(graph)
    if not names:
        raise ScasegError("the model has no Conv, MatMul or Gemm with constant weights to quantize")
    rewrites = (f"|fuse_gelu={int8.PLACEMENTS[target].fuse_gelu}|fold_bn={int8.PLACEMENTS[target].fold_bn}|"
                + ",".join(names)).encode()  # and the tensors calibrated
    key = data.cache_key(model.graph.SerializeToString() + rewrites, info, cset.calib)  # the graph calibrated
    # Named after the graph too: scaseg-export calibrates from a temporary "model.fp32.onnx" for every model.
    cache_file = Path(cache_dir).expanduser() / f"{stem}.{key['model'][:12]}.calib.npz" if cache_dir else None
    stats, cache = (data.load_stats(cache_file, key) if cache_file else (None, "off"))
    if stats is None:
        bar = progress_bar(total=len(cset.calib), desc="int8: calibrate", unit="img", file=sys.stderr, bar_format=BAR)
        with bar:
            def progress(batches):
                for b in batches:
                    yield b
                    bar.update(min(b.shape[0], bar.total - bar.n))
            stats = collect_stats(runner(graph, names), data.batches(cset.calib, info), names, progress)
        if cache_file:
            data.save_stats(cache_file, key, stats)
    thresholds = stats.thresholds(method)
    held = data.heldout_data(cset.heldout, info)
    result = run_guard(model, thresholds, target, held, info.num_classes, info.output, max_miou_drop)
    counts = int8.count_quantized(result.model)
    summary: dict[str, Any] = {
        "target": f"{target} (Q/DQ placement for {'ONNX Runtime CPU' if target == 'cpu' else 'TensorRT explicit quantization'})",
        "method": method,
        "images": cset.describe(),
        "cache": cache,
        "quantized_ops": ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none",
        "miou_fp32": round(result.miou_fp32, 2),
        "miou_int8_all_quantized": round(result.miou_int8_all, 2),
        "miou_int8": round(result.miou_int8, 2),
        "miou_drop": round(result.drop, 2) + 0.0,  # + 0.0: no "-0.0" when int8 scores a hair above fp32
        "kept_float_blocks": ", ".join(result.kept_float_blocks) or "none",
        **result.float_summary(),  # how much compute those blocks keep in float, and its cost
    }
    if result.drop > max_miou_drop:
        summary["warning"] = f"the drop stays above {max_miou_drop} points even with every block in float"
    extra = dict(info.extra, calibration={
        **summary, "reference": result.reference, "max_miou_drop": max_miou_drop,
        "kept_float_nodes": result.kept_float_nodes, "num_calib_images": len(cset.calib),
        "num_heldout_images": len(cset.heldout), **({"kept_float": result.kept_float} if result.kept_float else {}),
    })
    written = info.replace(precision="int8", extra=extra)
    _write(result.model, written, out_path)
    return result.model, written, summary
