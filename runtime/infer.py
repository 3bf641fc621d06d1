"""scaseg-infer: segment a video, an image, a folder of images, a camera or a stream, and save overlays or labels."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import cv2
import numpy as np
import typer

from scaseg import DEFAULT_MODEL_FILE, default_model, progress
from scaseg.cli import make_app, parse_imgsz, quiet_option, renamed_option
from scaseg.runtime.backends import RunSettings, open_backend
from scaseg.errors import Interrupted, ScasegError, run_cli, version_option
from scaseg.fileio import atomic_dir, atomic_path, check_dir_output, check_output, refuse_overwrite, write_bytes
from scaseg.runtime.backends.threads import apply_auto_threads
from scaseg.runtime.options import (BackendName, MemoryMode, backend_option, batch_option, device_option, imgsz_option,
                                    memory_option, model_name_option, server_option, threads_option, SERVER_OWNS)
from scaseg.runtime.overlay import palette_lut, palette_planes, render_overlay, render_overlay_planes
from scaseg.runtime.predictor import Predictor
from scaseg.runtime.preprocess import Geometry, label_dtype
from scaseg.runtime.remote import RemotePredictor, check_server_options, open_server
from scaseg.suffixes import IMAGE_SUFFIXES, LABEL_OUTPUT_SUFFIXES, VIDEO_OUTPUT_SUFFIXES, VIDEO_SUFFIXES
from scaseg.runtime.pipeline import StopPipeline, run_pipeline
from scaseg.runtime.sinks import ImageSink, Picture, VideoSink
from scaseg.runtime.sources import Frame, Source, camera_index, is_url, open_source

app = make_app(__doc__)

# The record a folder output carries: it marks the folder as ours, the one kind of folder a later run may replace.
RECORD = "scaseg-infer.json"


def _is_infer_output(folder: Path) -> bool:
    return (folder / RECORD).is_file()


# Choices as Literal types: --help lists them as a|b and the parser refuses others (the values arrive as str).
OutputFormat = Literal["overlay", "labels"]
Resize = Literal["letterbox", "stretch"]


@dataclass(frozen=True)
class InferRequest:
    """What scaseg-infer was asked, parsed and checked once at its edge; the layers below trust it."""

    settings: RunSettings  # device, threads (None: auto) and memory
    imgsz: Optional[tuple[int, int]]
    batch: Optional[int]
    resize: str  # letterbox | stretch
    kind: str  # overlay | labels
    alpha: float
    legend: bool
    show: bool
    max_frames: Optional[int]
    queue_size: int
    quiet: bool
    video_codec: Optional[str] = None  # an FFmpeg encoder name; None: the container's default (scaseg.data.video)
    server: Optional[str] = None  # a Triton server's URL (checked by parse_server_url); None: run the model here
    model_name: Optional[str] = None  # the served model; None: the server's only one


def parse_video_codec(name: Optional[str]) -> Optional[str]:
    """--video-codec: an encoder the installed FFmpeg (PyAV's) has, or one sentence naming a few that it has."""
    if name is None:
        return None
    import av

    name = name.strip()
    try:
        if av.Codec(name, "w").type == "video":
            return name
    except (av.FFmpegError, ValueError):
        pass
    have = sorted(c for c in ("libx264", "h264_nvenc", "hevc_nvenc", "mpeg4", "mjpeg", "libx265", "h264_v4l2m2m")
                  if c in av.codecs_available)
    raise ScasegError(f"--video-codec {name}: PyAV's FFmpeg has no video encoder of that name (it has e.g. "
                      f"{', '.join(have)})")


def default_output(source: Source, spec: str, fmt: str) -> Path:
    """``<stem>_seg.mp4`` beside a video, ``<stem>_seg.png`` beside an image, ``<folder>_seg/`` beside a folder.

    Cameras and streams write into the current folder. Label maps of a video go to a folder of PNGs.
    """
    base = Path.cwd() if source.kind in ("camera", "stream") else Path(spec).expanduser().parent
    if source.kind == "folder":
        return Path(spec).expanduser().with_name(f"{Path(spec).expanduser().name}_seg")
    if source.kind == "image":
        return base / f"{source.name}_seg.png"
    return base / (f"{source.name}_seg" if fmt == "labels" else f"{source.name}_seg.mp4")


def _check_output(source: Source, out: Path, fmt: str) -> str:
    """Which sink ``out`` needs ("video", "file" or "folder"), refusing combinations that cannot work."""
    suffix = out.suffix.lower()
    if source.kind == "image":
        if suffix not in IMAGE_SUFFIXES:
            raise ScasegError(f"the output {out} for one image must be an image file ({', '.join(IMAGE_SUFFIXES)})")
        if fmt == "labels" and suffix not in LABEL_OUTPUT_SUFFIXES:
            raise ScasegError(f"label maps need a lossless format; name the output {out.with_suffix('.png')}")
        return "file"
    if source.kind == "folder" or fmt == "labels":
        if suffix in VIDEO_SUFFIXES or suffix in IMAGE_SUFFIXES:
            raise ScasegError(f"this run writes a folder of images; -o {out} looks like a file name")
        return "folder"
    if suffix not in VIDEO_OUTPUT_SUFFIXES:
        raise ScasegError(f"the output video {out} needs a .mp4, .avi or .mkv name")
    return "video"


def _check_target(out: Path, target: str, source: str, model: Optional[str]) -> None:
    """Before any work: the output can be written, replaces no input and no folder of the user's."""
    local = [] if is_url(source.strip()) or camera_index(source.strip()) is not None else [source]
    refuse_overwrite([out], local + ([model] if model else []))
    if target == "folder":
        check_dir_output(out, owned=_is_infer_output, what="scaseg-infer output (it has no " + RECORD + ")")
    else:
        check_output(out)


@app.command()
def infer(
    source: str = typer.Argument(..., metavar="SOURCE", help="Video file, image, image folder, camera index (0) or rtsp:// / http:// URL."),
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="PATH", help="Model: .onnx, .trt/.engine/.plan, or .pth checkpoint.", show_default=f"the shipped {DEFAULT_MODEL_FILE} (synthetic street scenes only)"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output video, image or folder.", show_default="<source>_seg.mp4 / .png / folder beside the source"),
    fmt: OutputFormat = typer.Option("overlay", "--output-kind", help="overlay: colour mask over the image; labels: raw label PNGs."),
    _format: Optional[str] = renamed_option("--format", "--output-kind"),  # --format is scaseg-export's onnx|engine|triton
    save_labels: bool = typer.Option(False, "--save-labels", help="Shorthand for --output-kind labels."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Weight of the colour mask in the overlay."),
    legend: bool = typer.Option(False, "--legend", help="Draw the names of the classes present in each frame."),
    show: bool = typer.Option(False, "--show", help="Display the result in a window (q or Esc stops)."),
    save: bool = typer.Option(True, "--save/--no-save", help="Write outputs (--no-save with --show only displays)."),
    backend: BackendName = backend_option(),  # type: ignore[valid-type]
    device: str = device_option(),
    threads: str = threads_option(),
    memory: MemoryMode = memory_option(),  # type: ignore[valid-type]
    imgsz: Optional[str] = imgsz_option(),
    resize: Resize = typer.Option("letterbox", "--resize", help="letterbox: keep the source's aspect ratio "
                                  "(scale to fit the model's input, pad, crop the labels back); stretch: resize to the "
                                  "input whatever the ratio (what training and scaseg-bench do), said once when it "
                                  "changes the ratio."),
    batch: Optional[int] = batch_option("Frames"),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after this many frames.", show_default="all"),
    queue_size: int = typer.Option(4, "--queue", min=1, max=64, help="Frames buffered between stages."),
    streams: str = typer.Option("auto", "--streams", metavar="auto|N", help="Model calls run side by side (ONNX "
                                "Runtime on the CPU), the --threads split between them: more frames per second where "
                                "one call does not keep every core busy (a small model: docs/performance.md), each "
                                "frame no sooner. auto: 1 and 2 streams are timed at load and 2 kept when 1.1x as "
                                "fast or more (small calls, 2+ threads; else 1). N: 1 to the thread count."),
    video_codec: Optional[str] = typer.Option(None, "--video-codec", metavar="ENCODER", help="FFmpeg encoder of a "
                                              "video output, e.g. h264_nvenc (NVIDIA GPUs), mpeg4.",
                                              show_default="libx264 (.mp4 .m4v .mov .mkv), mjpeg (.avi)"),
    server: Optional[str] = server_option("Segment through", "the model, " + SERVER_OWNS),
    model_name: Optional[str] = model_name_option(),
    quiet: bool = quiet_option(),
    version: bool = version_option("scaseg-infer"),
) -> None:
    """Segment SOURCE with MODEL and write an overlay video / images or label maps."""
    kind = "labels" if save_labels else fmt
    # spin=False: the pipeline's other stages need the cores ONNX Runtime's idle threads would spin on (RunSettings)
    settings = dataclasses.replace(RunSettings.parse(device, threads, memory.value, streams), spin=False)
    request = InferRequest(settings, parse_imgsz(imgsz), batch, resize, kind, alpha, legend, show, max_frames,
                           queue_size, quiet, parse_video_codec(video_codec), server, model_name)
    if server is not None:
        check_server_options(server, model_name, {"--model": model is not None, "--imgsz": imgsz is not None,
                                                  "--backend": backend.value != "auto", "--device": device != "auto",
                                                  "--threads": threads != "auto", "--streams": settings.streams != 1})
    elif model_name is not None:
        raise ScasegError("--model-name names a model on a Triton server: add --server URL")
    if not save and not show:
        raise ScasegError("--no-save without --show would do nothing; add --show or drop --no-save")
    if show and sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # OpenCV's Qt/GTK backends abort the whole process without a display; refuse before any work.
        raise ScasegError("--show needs a display (DISPLAY or WAYLAND_DISPLAY is not set); drop --show to only save")
    if request.server is not None:
        _infer_remote(source, output, save, request)
        return
    model_path, origin = (model, "") if model else (default_model(), "the shipped default, trained on synthetic street scenes only")
    src = open_source(source)
    try:
        out = output.expanduser() if output else default_output(src, source, kind)
        target = _check_output(src, out, kind) if save else "none"
        if request.video_codec and target != "video":
            raise ScasegError(f"--video-codec {request.video_codec} applies to a video output; this run writes "
                              + ("nothing" if target == "none" else "images"))
        if target != "none":
            _check_target(out, target, source, model_path)
        predictor = Predictor(open_backend(model_path, backend.value, settings=request.settings), request.imgsz,
                              request.batch, resize=request.resize)
        chosen = apply_auto_threads(predictor.backend, predictor.size, predictor.batch)
        if not quiet:  # once the model and the output are known to be good, so that an error stays one line
            print(f"scaseg-infer: model {model_path}" + (f" ({origin})" if origin else "")
                  + ("" if chosen == "-" else f", threads {chosen}"), file=sys.stderr)
        label = os.path.basename(model_path) + ("" if model else ", the shipped default")
        _run(src, predictor, out, target, request, label, record={"source": source, "model": model_path, "format": kind})
    finally:
        src.close()
        if show:
            cv2.destroyAllWindows()


def _infer_remote(source: str, output: Optional[Path], save: bool, request: InferRequest) -> None:
    """scaseg-infer --server: the same sources, outputs and contract; the frames go to the server."""
    assert request.server is not None
    src = open_source(source)
    try:
        out = output.expanduser() if output else default_output(src, source, request.kind)
        target = _check_output(src, out, request.kind) if save else "none"
        if target != "none":
            _check_target(out, target, source, None)
        predictor = RemotePredictor(open_server(request.server, request.model_name, request.resize), request.batch)
        if not request.quiet:
            print(f"scaseg-infer: server {predictor.backend.device}", file=sys.stderr)
        _run(src, predictor, out, target, request, f"{predictor.backend.model_name} on {request.server}",
             record={"source": source, "server": request.server, "model_name": predictor.backend.model_name,
                     "format": request.kind})
    finally:
        src.close()


def _run(src: Source, predictor: Predictor, out: Path, target: str, request: InferRequest, model_label: str,
         record: Optional[dict] = None) -> None:
    info, kind, show = predictor.info, request.kind, request.show
    lut = palette_lut(info.palette)
    with contextlib.ExitStack() as stack:
        sink: Optional[VideoSink | ImageSink] = None
        folder: Optional[Path] = None
        if target == "video":
            sink = VideoSink(stack.enter_context(atomic_path(out)), src.fps, name=str(out), codec=request.video_codec)
        elif target == "file":
            sink = ImageSink(file=stack.enter_context(atomic_path(out)))
        elif target == "folder":
            folder = stack.enter_context(atomic_dir(out, owned=_is_infer_output))
            sink = ImageSink(folder=folder, suffix=".png")

        noted: set[tuple[int, ...]] = set()
        legend_names = info.class_names if request.legend else None
        # An overlay only written to a video is drawn in the decoder's planes when the frame comes as planes
        # (render_overlay_planes): no camera-sized RGB picture at all. A legend, a window, images, or an encoder fed
        # full-range YUV (Motion JPEG) need RGB.
        in_planes = (kind == "overlay" and isinstance(sink, VideoSink) and sink.video.takes_planes and not show
                     and legend_names is None)
        table = palette_planes(lut) if in_planes and label_dtype(info.num_classes) == np.uint8 else None

        def render(frame: Frame, output: np.ndarray, geom: Geometry) -> tuple[np.ndarray, Optional[Picture]]:
            """In the worker pool: the labels to write and the overlay picture (coloured at the network's size)."""
            labels = predictor.finish(output, geom, to_source=kind == "labels")
            picture: Optional[Picture] = None
            if table is not None and frame.planes is not None:
                picture = render_overlay_planes(frame.planes, labels, table, request.alpha)
            elif kind == "overlay" or show:
                assert frame.image is not None
                picture = render_overlay(frame.image, labels, lut, request.alpha, legend_names)
            return labels, picture

        def consume(frame: Frame, rendered: tuple[np.ndarray, Optional[Picture]]) -> None:
            labels, picture = rendered
            if frame.hw not in noted:  # said once per frame size (folders mix sizes)
                noted.add(frame.hw)
                note = _stretch_note(frame.hw, predictor)
                if note:
                    progress.write(note, file=sys.stderr)
            if sink is not None:
                written = picture if kind == "overlay" else labels
                assert written is not None  # kind overlay: rendered above
                sink.write(frame.name, written)
            if show and isinstance(picture, np.ndarray):
                _show(picture)

        stats = run_pipeline(src, predictor, consume, render=render, queue_size=request.queue_size,
                             max_frames=request.max_frames, progress=not request.quiet)
        if sink is not None:
            sink.close(exact=not stats.interrupted)  # finalise the container before the rename, also after Ctrl-C
        if stats.frames == 0 and stats.interrupted:
            raise Interrupted(" before the first frame was written; nothing was written")
        if stats.frames == 0:
            raise ScasegError(f"no frame of {src.name} could be decoded ({stats.skipped} unreadable); nothing written")
        if folder is not None:
            write_bytes(folder / RECORD, (json.dumps({**(record or {}), "frames": stats.frames,
                                                      "interrupted": stats.interrupted}, indent=2) + "\n").encode())
    if stats.interrupted:
        kept = f"the output so far is saved in {out}" if target != "none" else "nothing was written"
        raise Interrupted(f" after {stats.frames} frames; {kept}")
    where = f"wrote {out}" if target != "none" else "displayed"
    print(f"scaseg-infer: {where}: {stats.frames} frames, {stats.fps:.1f} FPS end-to-end, "
          f"model {stats.model_fps:.1f} FPS" + (f" per stream x {stats.streams} streams" if stats.streams > 1 else "")
          + f" ({model_label}; {predictor.backend.name}, {predictor.backend.device})",
          file=sys.stderr)
    if not request.quiet and stats.frames:
        print("scaseg-infer: work per frame, ms summed over threads: " + ", ".join(
            f"{stage} {1000 * seconds / stats.frames:.1f}" for stage, seconds in stats.stage_seconds.items())
            + f" ({stats.workers} preprocess/render workers)", file=sys.stderr)
    if stats.skipped:
        names = ", ".join(stats.skipped_names[:5]) + (" ..." if len(stats.skipped_names) > 5 else "")
        why = f" (the first: {stats.skip_reason})" if stats.skip_reason else ""
        print(f"scaseg-infer: warning: skipped {stats.skipped} unreadable frame(s)" + (f": {names}" if names else "")
              + why, file=sys.stderr)


def _stretch_note(hw: tuple[int, ...], predictor: Predictor) -> Optional[str]:
    """With --resize stretch, the sentence that says frames of another aspect ratio are squeezed; else None."""
    size = predictor.size
    if predictor.resize != "stretch" or size is None or abs(hw[1] / hw[0] - size[1] / size[0]) <= 0.01:
        return None
    return (f"scaseg-infer: {hw[0]}x{hw[1]} frames are stretched to the model's {size[0]}x{size[1]} input "
            "(aspect ratio changed; --resize letterbox keeps it)")


def _show(picture: np.ndarray) -> None:
    try:
        cv2.imshow("scaseg-infer", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
    except cv2.error:
        raise ScasegError("--show cannot open a window here (no display, or OpenCV built without GUI support)") from None
    if key in (27, ord("q")):
        raise StopPipeline


def main() -> None:
    """Console entry point ``scaseg-infer``."""
    run_cli(app, prog="scaseg-infer")


if __name__ == "__main__":
    main()
