"""Frame sources, output sinks and the threaded decode -> infer -> encode pipeline behind scaseg-infer."""
from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Tuple, cast

import cv2
import numpy as np

from scaseg.errors import ScasegError
from scaseg.data.images import VideoFile, read_image, to_rgb_uint8, write_image
from scaseg.runtime.preprocess import Geometry
from scaseg.suffixes import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from scaseg.runtime.predictor import Predictor

# FFmpeg's own log lines ("Truncating packet...", "EBML header parsing failed") would bury the one-sentence
# errors; it reads this variable when the first capture opens. Set it yourself to see them again.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
try:  # OpenCV's own error log (e.g. "Camera index out of range") for the same reason
    from cv2.utils import logging as _cv_logging

    _cv_logging.setLogLevel(_cv_logging.LOG_LEVEL_SILENT)
except (ImportError, AttributeError):  # older OpenCV builds without the logging binding
    pass

# Consecutive undecodable frames tolerated inside a video before the rest is treated as unreadable.
MAX_BAD_FRAMES = 30
FALLBACK_FPS = 30.0


@dataclass
class Frame:
    """One input image; ``image`` is None when it could not be decoded (skipped and counted)."""

    index: int
    name: str
    image: Optional[np.ndarray]
    error: str = ""


# --------------------------------------------------------------------------------------------- sources


class Source:
    """An iterable of Frames with what a writer needs to know: kind, fps, frame count, a name for outputs."""

    kind = "source"
    name = "source"
    fps = FALLBACK_FPS
    frame_count: Optional[int] = None
    skipped = 0  # undecodable frames met so far

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file; safe to call twice."""


class CaptureSource(Source):
    """A video file, camera index or network stream read with cv2.VideoCapture."""

    def __init__(self, target: str | int, kind: str, name: str) -> None:
        self.kind, self.name, self.target = kind, name, target
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            self.cap.release()
            raise ScasegError({
                "camera": f"cannot open the camera {target} (not connected, busy, or no permission)",
                "stream": f"cannot open the stream {target} (unreachable, or a protocol OpenCV's FFmpeg lacks)",
            }.get(kind, f"cannot open the video {target} (not a video, or a codec OpenCV's FFmpeg lacks)"))
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and 0.5 <= fps <= 1000 else FALLBACK_FPS
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if kind == "video" and count > 0 else None
        ok, first = self.cap.read()
        if not ok or first is None:
            self.cap.release()
            if kind == "video":
                raise ScasegError(f"the video {target} has no frames that can be decoded")
            raise ScasegError(f"{kind} {target} opened but delivered no frame")
        self._first: Optional[np.ndarray] = first
        self.size = (first.shape[1], first.shape[0])  # (W, H), as VideoWriter wants it

    def __iter__(self) -> Iterator[Frame]:
        index, bad, pending = 0, 0, 0
        while True:
            if self._first is not None:
                ok, bgr, self._first = True, self._first, None
            else:
                ok, bgr = self.cap.read()
            if not ok or bgr is None:
                # A file's read fails at its end and at a corrupt frame alike: go on a little, and count the gap
                # as skipped only if a good frame follows it.
                known_more = self.frame_count is not None and index + pending < self.frame_count
                bad += 1
                pending += 1
                if self.kind == "video" and known_more and bad <= MAX_BAD_FRAMES:
                    continue
                return
            self.skipped += pending
            index += pending
            bad = pending = 0
            yield Frame(index, f"{self.name}_{index:06d}", to_rgb_uint8(bgr, bgr=True))
            index += 1

    def close(self) -> None:
        self.cap.release()


class ImageSource(Source):
    """One image file or every image of a folder; unreadable files in a folder are skipped and counted."""

    def __init__(self, paths: list[Path], root: Optional[Path], name: str) -> None:
        self.kind = "folder" if root is not None else "image"
        self.paths, self.root, self.name = paths, root, name
        self.frame_count = len(paths)

    def _name(self, path: Path) -> str:
        rel = path.relative_to(self.root) if self.root is not None else Path(path.name)
        return rel.with_suffix("").as_posix()

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            try:
                image = read_image(str(path))
            except ScasegError as exc:
                if self.root is None:
                    raise
                self.skipped += 1
                yield Frame(index, self._name(path), None, str(exc))
                continue
            yield Frame(index, self._name(path), image)


def open_source(spec: str) -> Source:
    """A camera index ("0"), a URL (rtsp://, http://...), an image, a folder of images, or a video file."""
    spec = str(spec).strip()
    if spec.isdigit():
        return CaptureSource(int(spec), "camera", f"camera{spec}")
    if "://" in spec:
        stem = Path(spec.split("?")[0].rstrip("/")).stem or "stream"
        return CaptureSource(spec, "stream", stem)
    path = Path(spec).expanduser()
    if not path.exists():
        raise ScasegError(f"source not found: {spec} (expected a video, an image, a folder of images, "
                          "a camera index or a stream URL)")
    from scaseg.data.datasets import list_images

    if path.is_dir():
        images = list_images(path)
        if not images:
            raise ScasegError(f"the folder {spec} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageSource(images, path, path.name)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        read_image(str(path))  # a lone image that cannot be read is an error, not a skipped frame
        return ImageSource([path], None, path.stem)
    if not os.access(path, os.R_OK):
        raise ScasegError(f"the video {spec} is not readable")
    return CaptureSource(str(path), "video", path.stem)


# --------------------------------------------------------------------------------------------- sinks

class VideoSink:
    """Writes RGB frames to a video (codec from the suffix); checked on close (see scaseg.data.images.VideoFile)."""

    def __init__(self, path: Path, fps: float, name: Optional[str] = None) -> None:
        self.path, self.fps = Path(path), fps
        self.video = VideoFile(path, fps, name=name)

    def write(self, name: str, image: np.ndarray) -> None:
        self.video.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)

    def close(self, exact: bool = True) -> None:
        """Finalise the container (writes the index) and check every frame is in it: after this the file plays."""
        self.video.close(exact=exact)


class ImageSink:
    """Writes each frame as ``<folder>/<name><suffix>`` (or to one fixed file when ``file`` is given)."""

    def __init__(self, folder: Optional[Path] = None, suffix: str = ".png", file: Optional[Path] = None) -> None:
        self.folder, self.suffix, self.file = folder, suffix, file

    def write(self, name: str, image: np.ndarray) -> None:
        colour = image.ndim == 3
        out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if colour else image
        target = self.file if self.file is not None else Path(self.folder or ".") / f"{name}{self.suffix}"
        write_image(target, out)

    def close(self, exact: bool = True) -> None:
        """Nothing buffered: each image is complete once written."""


# --------------------------------------------------------------------------------------------- pipeline

_END = object()
# (frame, network input or model output, geometry); the array is None for a frame that could not be decoded.
_Item = Tuple[Frame, Optional[np.ndarray], Optional[Geometry]]


class StopPipeline(Exception):
    """Raised by a consumer to end the run early and cleanly (e.g. 'q' pressed in the preview window)."""


@dataclass
class PipelineStats:
    """What one run did and how fast: end-to-end FPS against the model's own FPS."""

    frames: int = 0
    skipped: int = 0
    seconds: float = 0.0
    infer_seconds: float = 0.0
    infer_calls: int = 0
    interrupted: bool = False
    stopped: bool = False
    skipped_names: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def model_fps(self) -> float:
        return self.frames / self.infer_seconds if self.infer_seconds > 0 else 0.0


class _Stage(threading.Thread):
    """A worker that hands its exception to the consumer instead of dying silently."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # re-raised in the consumer thread
            self.error = exc


def _put(q: "queue.Queue[object]", item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: "queue.Queue[object]", stop: threading.Event) -> object:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END


def run_pipeline(
    source: Source,
    predictor: "Predictor",
    consume: Callable[[Frame, np.ndarray], None],
    *,
    queue_size: int = 4,
    max_frames: Optional[int] = None,
    progress: bool = True,
) -> PipelineStats:
    """Decode+preprocess, inference and postprocess+``consume`` run in three threads joined by bounded queues.

    ``predictor`` is a scaseg.runtime.predictor.Predictor. ``consume(frame, labels)`` runs in the calling thread
    (so windows and Ctrl-C behave); labels are at the frame's own size. Memory stays bounded by the queues.
    Ctrl-C stops every stage (frames in flight are dropped) and returns with ``interrupted=True``: the caller
    finalises its outputs, then re-raises. An exception in a stage stops the others and is re-raised here.
    """
    from scaseg.progress import progress as progress_bar

    stop = threading.Event()
    decoded: "queue.Queue[object]" = queue.Queue(maxsize=queue_size)
    inferred: "queue.Queue[object]" = queue.Queue(maxsize=queue_size)
    stats = PipelineStats()
    batch_size = predictor.batch

    def read() -> None:
        try:
            for n, frame in enumerate(source):
                if stop.is_set() or (max_frames is not None and n >= max_frames):
                    break
                item: _Item = (frame, None, None)
                if frame.image is not None:
                    tensor, geom = predictor.prepare(frame.image)
                    item = (frame, tensor, geom)
                if not _put(decoded, item, stop):
                    break
        finally:
            _put(decoded, _END, stop)

    def infer() -> None:
        try:
            done = False
            while not done and not stop.is_set():
                got = [_get(decoded, stop)]
                # Take what is already decoded, up to one batch, without waiting for more.
                while len(got) < batch_size and got[-1] is not _END:
                    try:
                        got.append(decoded.get_nowait())
                    except queue.Empty:
                        break
                if got[-1] is _END:
                    got.pop()
                    done = True
                items = [cast(_Item, it) for it in got]
                tensors = [t for _, t, _ in items if t is not None]
                outputs: list[np.ndarray] = []
                if tensors:
                    t0 = time.perf_counter()
                    outputs = list(predictor.run(tensors))
                    stats.infer_seconds += time.perf_counter() - t0
                    stats.infer_calls += 1
                it_out = iter(outputs)
                for frame, tensor, geom in items:
                    if not _put(inferred, (frame, None if tensor is None else next(it_out), geom), stop):
                        return
        finally:
            _put(inferred, _END, stop)

    stages = [_Stage(read, "scaseg-decode"), _Stage(infer, "scaseg-infer")]
    bar = progress_bar(total=min(x for x in (source.frame_count, max_frames) if x is not None)
               if (source.frame_count or max_frames) else None,
               unit="frame", file=sys.stderr, disable=not progress, dynamic_ncols=True, smoothing=0.1)
    start = time.perf_counter()
    for stage in stages:
        stage.start()
    try:
        while True:
            got = inferred.get()
            if got is _END:
                break
            frame, output, geom = cast(_Item, got)
            if output is None or geom is None:
                stats.skipped += 1
                stats.skipped_names.append(frame.name)
            else:
                consume(frame, predictor.finish(output, geom))
                stats.frames += 1
                if stats.infer_seconds > 0:
                    bar.set_postfix_str(f"model {stats.model_fps:.1f} FPS", refresh=False)
            bar.update(1)
    except KeyboardInterrupt:
        stats.interrupted = True
    except StopPipeline:
        stats.stopped = True
    finally:
        stop.set()
        for stage in stages:
            while stage.is_alive():  # unblock a stage waiting on a full queue
                for q in (decoded, inferred):
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass
                stage.join(timeout=0.05)
        stats.seconds = time.perf_counter() - start
        bar.close()
    for stage in stages:
        if stage.error is not None and not isinstance(stage.error, KeyboardInterrupt):
            raise stage.error
    # Gaps inside a video are only known once a later frame decodes; add them here.
    stats.skipped = max(stats.skipped, source.skipped)
    return stats
