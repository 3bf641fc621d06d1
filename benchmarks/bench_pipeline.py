"""End-to-end vs model-only FPS of the scaseg-infer pipeline on a video, and the per-frame Python overhead.

    python benchmarks/bench_pipeline.py                 # exports scaseg-t (random weights) at 512x512 first
    python benchmarks/bench_pipeline.py model.onnx      # any ONNX model with scaseg metadata
    python benchmarks/bench_pipeline.py --frames 16 --repeats 3 --threads 2

Everything is measured in this one run, side by side; figures are medians. Random weights do not change
speed. On a shared machine the absolute numbers move with the load: compare the ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from scaseg.runtime.backends import open_backend
from scaseg.runtime.overlay import palette_lut, render_overlay
from scaseg.runtime.predictor import Predictor
from scaseg.runtime.pipeline import run_pipeline
from scaseg.runtime.sinks import VideoSink
from scaseg.runtime.sources import open_source


def export_scaseg_t(folder: Path, size: int) -> Path:
    """scaseg-t (19 classes, random weights) exported to ONNX at size x size; needs torch and onnx."""
    import onnx

    from scaseg import build
    from scaseg.export.onnx_export import ExportOptions, to_onnx
    from scaseg.metadata import ModelInfo

    info = ModelInfo(variant="scaseg-t", num_classes=19, input_size=(size, size))
    proto, _ = to_onnx(build("scaseg-t", num_classes=19), info, ExportOptions(imgsz=(size, size)))
    path = folder / f"scaseg-t_{size}.onnx"
    onnx.save(proto, str(path))
    return path


def make_video(path: Path, frames: int, hw: tuple[int, int], fps: float = 30.0) -> Path:
    """A street-like clip: synthetic scenes when scaseg.data.synth exists, else smoothed noise."""
    h, w = hw
    try:
        from scaseg.data.synth import render_scene

        def frame(i: int) -> np.ndarray:
            return render_scene(i, size=(h, w))[0]
    except ImportError:
        rng = np.random.default_rng(0)

        def frame(i: int) -> np.ndarray:
            return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 3)

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    for i in range(frames):
        writer.write(cv2.cvtColor(frame(i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def per_frame_overheads(predictor: Predictor, video: Path) -> dict[str, float]:
    """Median ms per frame of decode, preprocess, postprocess (argmax + back to source size), overlay, encode."""
    lut = palette_lut(predictor.info.palette)
    laps: dict[str, list[float]] = {k: [] for k in ("decode", "preprocess", "postprocess", "overlay", "encode")}
    src = open_source(str(video))
    frames = []
    it = iter(src)
    while True:
        t0 = time.perf_counter()
        frame = next(it, None)
        if frame is None:
            break
        laps["decode"].append(time.perf_counter() - t0)
        frames.append(frame)
    src.close()
    out = None
    for frame in frames:
        t0 = time.perf_counter()
        tensor, geom = predictor.prepare(frame.image)
        laps["preprocess"].append(time.perf_counter() - t0)
        if out is None:
            out = predictor.run([tensor])[0]  # one inference: postprocess cost does not depend on the values
        t0 = time.perf_counter()
        labels = predictor.finish(out, geom)
        laps["postprocess"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        picture = render_overlay(frame.image, labels, lut, 0.5)
        laps["overlay"].append(time.perf_counter() - t0)
        frame.image = picture
    with tempfile.TemporaryDirectory() as tmp:
        sink = VideoSink(Path(tmp) / "o.mp4", 30.0)
        for frame in frames:
            t0 = time.perf_counter()
            sink.write(frame.name, frame.image)  # type: ignore[arg-type]
            laps["encode"].append(time.perf_counter() - t0)
        sink.close()
    return {k: 1000 * statistics.median(v) for k, v in laps.items()}


def model_only_fps(predictor: Predictor, video: Path, warmup: int, runs: int) -> float:
    src = open_source(str(video))
    image = next(iter(src)).image
    src.close()
    batch = predictor.prepare(image)[0][None]  # type: ignore[arg-type]
    for _ in range(warmup):
        predictor.backend.infer(batch)
    laps = []
    for _ in range(max(runs, 0)):
        t0 = time.perf_counter()
        predictor.backend.infer(batch)
        laps.append(time.perf_counter() - t0)
    return 1.0 / statistics.median(laps) if laps else 0.0


def sequential_fps(predictor: Predictor, video: Path, out: Path) -> float:
    """The same work as the pipeline in one thread, one frame after another (what overlap is compared with)."""
    lut = palette_lut(predictor.info.palette)
    src = open_source(str(video))
    sink = VideoSink(out, src.fps)
    t0 = time.perf_counter()
    n = 0
    for frame in src:
        tensor, geom = predictor.prepare(frame.image)  # type: ignore[arg-type]
        labels = predictor.finish(predictor.run([tensor])[0], geom)
        sink.write(frame.name, render_overlay(frame.image, labels, lut, 0.5))  # type: ignore[arg-type]
        n += 1
    sink.close()
    src.close()
    return n / (time.perf_counter() - t0)


def pipeline_fps(predictor: Predictor, video: Path, out: Path) -> tuple[float, float]:
    """scaseg-infer's threaded pipeline writing an overlay video: (end-to-end FPS, model FPS inside it)."""
    lut = palette_lut(predictor.info.palette)
    src = open_source(str(video))
    sink = VideoSink(out, src.fps)
    stats = run_pipeline(src, predictor, lambda f, lab: sink.write(f.name, render_overlay(f.image, lab, lut, 0.5)),
                         progress=False)
    sink.close()
    src.close()
    return stats.fps, stats.model_fps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="ONNX model (default: export scaseg-t at --size)")
    ap.add_argument("--size", type=int, default=512, help="export size of the default scaseg-t model")
    ap.add_argument("--frames", type=int, default=12, help="frames in the test video")
    ap.add_argument("--video-hw", default="540x960", help="video frame size HxW")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its own)")
    ap.add_argument("--repeats", type=int, default=3, help="pipeline/sequential passes (median)")
    ap.add_argument("--runs", type=int, default=10, help="model-only timed runs (median)")
    args = ap.parse_args()
    h, w = (int(v) for v in args.video_hw.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.model is None:
            t0 = time.perf_counter()
            model_path = export_scaseg_t(tmp, args.size)
            print(f"exported scaseg-t at {args.size}x{args.size} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        else:
            model_path = Path(args.model)
        video = make_video(tmp / "clip.mp4", args.frames, (h, w))
        predictor = Predictor(open_backend(model_path, device="cpu", threads=args.threads))
        over = per_frame_overheads(predictor, video)
        model_only_fps(predictor, video, warmup=2, runs=0)  # warm-up
        model, seq, pipe, inside = [], [], [], []
        for _ in range(args.repeats):  # interleaved, so a change of load on the machine hits all three alike
            model.append(model_only_fps(predictor, video, warmup=0, runs=args.runs))
            seq.append(sequential_fps(predictor, video, tmp / "seq.mp4"))
            e2e, m = pipeline_fps(predictor, video, tmp / "pipe.mp4")
            pipe.append(e2e)
            inside.append(m)
        model_fps, seq_fps, pipe_fps, inside_fps = (statistics.median(x) for x in (model, seq, pipe, inside))
        ratio = statistics.median(p / m for p, m in zip(pipe, model))

    info = predictor.info
    print(f"model: {model_path.name} ({info.variant}, input {predictor.size}, {predictor.backend.name} "
          f"{predictor.backend.device}, threads={args.threads or 'default'}); video {args.frames} frames {h}x{w}; "
          f"cpu count {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")
    print("per-frame Python overhead, median ms: " + ", ".join(f"{k} {v:.2f}" for k, v in over.items()))
    pre_post = over["preprocess"] + over["postprocess"]
    print(f"  pre+post {pre_post:.2f} ms = {100 * pre_post * model_fps / 1000:.1f}% of one model call")
    print(f"{'':28s}{'FPS':>8s}{'vs model-only':>16s}")
    for name, fps in (("model-only (infer only)", model_fps), ("sequential end-to-end", seq_fps),
                      ("pipeline end-to-end", pipe_fps), ("model inside the pipeline", inside_fps)):
        print(f"{name:28s}{fps:8.3f}{fps / model_fps:15.1%}")
    print(f"pipeline / model-only, median of per-repeat ratios: {ratio:.1%} over {args.repeats} repeats")


if __name__ == "__main__":
    main()
