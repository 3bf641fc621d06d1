"""Frames as the decoder's planes: how far scaseg-infer's I420 path is from the RGB path it replaced for H.264 files.

A synthetic street drive (scaseg-synth scenes) is written as H.264 by scaseg.data.video.VideoFile at --source-size,
then read twice: by PlanesSource (PyAV, the stream's I420 planes) and by CaptureSource (OpenCV, FFmpeg's scaler to
BGR, then RGB: every H.264 file's path before). Per frame:
- labels: the model on Predictor.prepare_frame(planes frame) (preprocess_planes) and on the RGB path's input;
  and, as the floor any change of decoder meets, the model on preprocess(planes.rgb()): the same frame converted
  to RGB by OpenCV's cvtColor instead of FFmpeg's scaler, everything else as before. Printed: the share of pixels
  (at the network's size) whose label agrees with the RGB path's.
- picture: with the labels of the planes path, the overlay drawn in the planes (render_overlay_planes) against
  the RGB overlay of the same frame converted for the writer (I420.from_rgb(render_overlay(planes.rgb()))): the
  share of Y, U and V samples more than 1 and more than 8 levels apart.

    python benchmarks/bench_planes.py                                   # the shipped model, 1080p, 16 frames
    python benchmarks/bench_planes.py --models scaseg-t.onnx scaseg-t.int8.onnx --source-size 720x1280
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from perf_machine import machine_line
from scaseg.cli import SIZE_METAVAR, size_type


def street(path: Path, frames: int, hw: tuple[int, int]) -> Path:
    from scaseg.data.synth import render_video
    from scaseg.data.video import VideoFile

    video = VideoFile(path, 30.0)
    for image, _ in render_video(0, frames, hw):
        video.write(image, rgb=True)
    video.close()
    return path


def compare(model: str, clip: Path) -> dict[str, float]:
    """Label agreement (planes and cvtColor paths vs the RGB path) and picture differences over the clip."""
    from scaseg.data.video import I420
    from scaseg.runtime.backends import open_backend
    from scaseg.runtime.overlay import palette_lut, palette_planes, render_overlay, render_overlay_planes
    from scaseg.runtime.predictor import Predictor
    from scaseg.runtime.sources import CaptureSource, PlanesSource

    predictor = Predictor(open_backend(model, "onnxruntime"))
    info = predictor.info
    lut = palette_lut(info.palette)
    table = palette_planes(lut)
    planes_src, rgb_src = PlanesSource.open(str(clip), "clip"), CaptureSource(str(clip), "video", "clip")
    if planes_src is None:
        raise SystemExit(f"bench_planes: PlanesSource does not take {clip}")

    def labels(tensor_geom: tuple[np.ndarray, object]) -> np.ndarray:
        tensor, geom = tensor_geom
        return predictor.finish(predictor.run([tensor])[0], geom, to_source=False)  # type: ignore[arg-type]

    agree_planes = agree_cvt = pixels = 0
    samples = over1 = over8 = 0
    try:
        for planes_frame, rgb_frame in zip(planes_src, rgb_src):
            assert planes_frame.planes is not None and rgb_frame.image is not None
            before = labels(predictor.prepare(rgb_frame.image))
            ours = labels(predictor.prepare_frame(planes_frame))
            converted = labels(predictor.prepare(planes_frame.planes.rgb()))
            agree_planes += int((ours == before).sum())
            agree_cvt += int((converted == before).sum())
            pixels += before.size
            drawn = render_overlay_planes(planes_frame.planes, ours, table, 0.5)
            want = I420.from_rgb(render_overlay(planes_frame.planes.rgb(), ours, lut, 0.5))
            off = np.abs(drawn.planes.astype(np.int16) - want.planes)
            samples += off.size
            over1 += int((off > 1).sum())
            over8 += int((off > 8).sum())
    finally:
        planes_src.close()
        rgb_src.close()
    return {"planes": agree_planes / pixels, "cvtcolor": agree_cvt / pixels, "over1": over1 / samples,
            "over8": over8 / samples}


def main(argv: Optional[list[str]] = None) -> None:
    from scaseg import default_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=None, help="ONNX models (default: the shipped int8 model)")
    ap.add_argument("--source-size", type=size_type, default=(1080, 1920), metavar=SIZE_METAVAR,
                    help="frame size of the clip (default 1080x1920)")
    ap.add_argument("--frames", type=int, default=16, help="frames in the clip")
    args = ap.parse_args(argv)
    print(machine_line())
    h, w = args.source_size
    with tempfile.TemporaryDirectory(prefix="bench-planes-") as tmp:
        clip = street(Path(tmp) / "street.mp4", args.frames, (h, w))
        print(f"{args.frames} frames of a synthetic street drive, {h}x{w}, H.264 (VideoFile); labels compared at the "
              "network's size with the RGB path's (OpenCV decode, BGR -> RGB, preprocess)")
        for model in args.models or [default_model()]:
            r = compare(model, clip)
            print(f"  {Path(model).name}: labels agree {100 * r['planes']:.2f}% (planes path); "
                  f"{100 * r['cvtcolor']:.2f}% (the same frames converted by cvtColor, not FFmpeg's scaler); "
                  f"overlay samples apart > 1 level {100 * r['over1']:.3f}%, > 8 levels {100 * r['over8']:.3f}%")


if __name__ == "__main__":
    main()
