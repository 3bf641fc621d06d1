"""Video in and out: OpenCV against PyAV (FFmpeg's libraries) on the same clips, per frame, wall and CPU time.

Decode: cv2.VideoCapture.read (BGR) against PyAV's decoder (to_ndarray bgr24) with FFmpeg's threading off (SLICE)
and on (AUTO: frame threads), on an H.264 clip and an MPEG-4 part 2 clip; and scaseg-infer's own two readers
(scaseg.runtime.sources): PlanesSource (PyAV, the stream's I420 planes, no conversion) and CaptureSource (OpenCV,
then BGR -> RGB).
Encode: cv2.VideoWriter mp4v (what the runtime wrote before) against PyAV with FFmpeg's own RGB -> YUV scaler, and
scaseg.data.video.VideoFile (OpenCV's cvtColor to I420, then libx264 ultrafast or mpeg4): what the runtime writes;
and VideoFile given I420 planes (what scaseg-infer's overlay of a PlanesSource frame is).
Each figure is the median over --repeats passes of the mean over --frames frames; CPU time is the process's user +
system time, which shows work done on other threads (an encoder's) that wall time hides.

    python benchmarks/bench_video_io.py                       # 720p, 1080p, 2160p; 60 frames
    python benchmarks/bench_video_io.py --sizes 1080p --frames 120 --repeats 5
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import cv2
import numpy as np

from perf_machine import machine_line
from perf_measure import median_wall_cpu_ms

SIZES = {"720p": (720, 1280), "1080p": (1080, 1920), "2160p": (2160, 3840)}


def cv2_decode(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def av_decode(path: Path, threading: str) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = threading
        return sum(1 for frame in container.decode(stream) if frame.to_ndarray(format="bgr24") is not None)


def cv2_encode(frames: list[np.ndarray], path: Path) -> int:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (w, h))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return len(frames)


def av_scaler_encode(frames: list[np.ndarray], path: Path, codec: str) -> int:
    """PyAV with FFmpeg's own scaler converting each RGB frame (what a plain PyAV writer does)."""
    import av

    from scaseg.data.video import ENCODER_OPTIONS

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = dict(ENCODER_OPTIONS.get(codec, {}))
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return len(frames)


def videofile_encode(frames: list[Any], path: Path, codec: str) -> int:
    """VideoFile writing RGB frames, or I420 planes (which it encodes as they are)."""
    from scaseg.data.video import VideoFile

    video = VideoFile(path, 30.0, codec=codec)
    for picture in frames:
        video.write(picture, rgb=True)
    video.close()
    return len(frames)


def source_decode(path: Path, planes: bool) -> int:
    from scaseg.runtime.sources import CaptureSource, PlanesSource

    src = PlanesSource.open(str(path), "clip") if planes else CaptureSource(str(path), "video", "clip")
    if src is None:
        raise SystemExit(f"PlanesSource does not take {path}")
    try:
        return sum(1 for frame in src if (frame.planes if planes else frame.image) is not None)
    finally:
        src.close()


def measure(name: str, frames: list[np.ndarray], repeats: int, tmp: Path) -> list[tuple[str, float, float]]:
    from scaseg.data.video import I420

    rows = []
    planes = [I420.from_rgb(rgb) for rgb in frames]
    encoders: dict[str, Callable[[], int]] = {
        "encode cv2.VideoWriter mp4v": lambda: cv2_encode(frames, tmp / "cv2.mp4"),
        "encode PyAV scaler + libx264": lambda: av_scaler_encode(frames, tmp / "avs.mp4", "libx264"),
        "encode VideoFile mpeg4": lambda: videofile_encode(frames, tmp / "m4.mp4", "mpeg4"),
        "encode VideoFile libx264 (used)": lambda: videofile_encode(frames, tmp / "x264.mp4", "libx264"),
        "encode VideoFile libx264, I420 planes": lambda: videofile_encode(planes, tmp / "planes.mp4", "libx264"),
    }
    for label, fn in encoders.items():
        rows.append((label, *median_wall_cpu_ms(fn, repeats)))
    for clip, label in ((tmp / "x264.mp4", "H.264"), (tmp / "cv2.mp4", "mp4v")):
        rows.append((f"decode {label} cv2.VideoCapture", *median_wall_cpu_ms(lambda: cv2_decode(clip), repeats)))
        for threading in ("SLICE", "AUTO"):
            rows.append((f"decode {label} PyAV {threading}", *median_wall_cpu_ms(lambda: av_decode(clip, threading), repeats)))
    clip = tmp / "x264.mp4"
    rows.append(("decode H.264 CaptureSource (RGB)", *median_wall_cpu_ms(lambda: source_decode(clip, False), repeats)))
    rows.append(("decode H.264 PlanesSource (used)", *median_wall_cpu_ms(lambda: source_decode(clip, True), repeats)))
    return rows


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES), help="frame sizes")
    ap.add_argument("--frames", type=int, default=60, help="frames per clip")
    ap.add_argument("--repeats", type=int, default=3, help="passes per figure (median)")
    args = ap.parse_args(argv)
    import av

    from scaseg.data.synth import render_video

    print(machine_line())
    print(f"opencv {cv2.__version__}, PyAV {av.__version__}; {args.frames} frames of a synthetic street drive")
    with tempfile.TemporaryDirectory() as name:
        for size in args.sizes:
            print(f"rendering {size} ...", file=sys.stderr, flush=True)
            frames = [image for image, _ in render_video(0, args.frames, SIZES[size])]
            print(f"{size}: {'':34s}{'wall ms':>9s}{'CPU ms':>9s}  per frame")
            for label, wall, cpu in measure(size, frames, args.repeats, Path(name)):
                print(f"  {label:40s}{wall:7.2f}  {cpu:7.2f}")


if __name__ == "__main__":
    main()
