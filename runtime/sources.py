"""Frame sources for scaseg-infer: a video file, a camera, a network stream, one image or a folder of images.

What may be a source (:func:`open_source`, the one rule): a regular file (video or image), a folder of images, a
camera the user named (an index of ASCII digits, or a ``/dev/video*`` device), or a URL. Any other special file (a
FIFO, a socket, another device) is refused at once: reading one can block forever or never end.
"""
from __future__ import annotations

import math
import os
import re
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator, Optional

import cv2
import numpy as np

from scaseg.cli import is_utf8, special_file
from scaseg.errors import ScasegError
from scaseg.data.images import native_path, read_image, to_rgb_uint8
from scaseg.data.video import I420
from scaseg.suffixes import IMAGE_SUFFIXES

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
# A camera index: up to 4 ASCII digits, as OpenCV reads them (a device number, or a backend's CAP_* base plus one,
# e.g. 200 for V4L2's camera 0). Anything else (a Unicode digit such as "²", 23 digits) is a path.
CAMERA_INDEX = re.compile(r"[0-9]{1,4}")
# V4L2 cameras (Linux), also when reached through a /dev/v4l/by-id/... link.
VIDEO_DEVICE = re.compile(r"/dev/video[0-9]+")


class Frame:
    """One input image: RGB uint8 ``image``, or the decoder's own I420 ``planes``; neither when it could not be decoded
    (skipped and counted, ``error`` says why).

    A frame given as planes makes ``image`` from them on first use (one colour conversion), so every consumer works;
    the frame path's own stages read the planes instead (Predictor.prepare_frame, scaseg-infer's overlay, the video
    writer) and no camera-sized RGB picture is ever made.
    """

    __slots__ = ("index", "name", "error", "planes", "_image")

    def __init__(self, index: int, name: str, image: Optional[np.ndarray], error: str = "",
                 planes: Optional[I420] = None) -> None:
        self.index, self.name, self.error, self.planes, self._image = index, name, error, planes, image

    @property
    def image(self) -> Optional[np.ndarray]:
        if self._image is None and self.planes is not None:
            self._image = self.planes.rgb()
        return self._image

    @property
    def readable(self) -> bool:
        """Whether the frame decoded (without converting it)."""
        return self._image is not None or self.planes is not None

    @property
    def hw(self) -> tuple[int, int]:
        """(H, W) of a frame that decoded (without converting it)."""
        if self.planes is not None:
            return self.planes.hw
        assert self._image is not None
        return int(self._image.shape[0]), int(self._image.shape[1])


class Source(ABC):
    """An iterable of Frames with what a writer needs to know: kind, fps, frame count, a name for outputs."""

    kind = "source"
    name = "source"
    fps = FALLBACK_FPS
    frame_count: Optional[int] = None
    skipped = 0  # undecodable frames met so far

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """The frames, in order."""

    def close(self) -> None:
        """Release the device or file; safe to call twice."""


class CaptureSource(Source):
    """A video file, camera index or network stream read with cv2.VideoCapture."""

    def __init__(self, target: str | int, kind: str, name: str) -> None:
        self.kind, self.name, self.target = kind, name, target
        if isinstance(target, int):
            self.cap = cv2.VideoCapture(target)
        else:
            with native_path(target) as opened:  # FFmpeg opens the file here and keeps it open
                self.cap = cv2.VideoCapture(opened)
        if not self.cap.isOpened():
            self.cap.release()
            raise ScasegError({
                "camera": f"cannot open the camera {target} (not connected, busy, or no permission)",
                "stream": f"cannot open the stream {target} (unreachable, or a protocol OpenCV's FFmpeg lacks)",
            }.get(kind, f"cannot open the video {target} (not a video, or a codec OpenCV's FFmpeg lacks)"))
        self.fps = _frame_rate(float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0))
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


def _frame_rate(value: float) -> float:
    """A source's frames per second as given, or FALLBACK_FPS where that is missing or absurd."""
    return value if math.isfinite(value) and 0.5 <= value <= 1000 else FALLBACK_FPS


class PlanesSource(Source):
    """A video file decoded by PyAV into I420 planes, used where they are the stream's own pictures.

    OpenCV's VideoCapture converts every decoded picture to BGR at camera size, and the frame path then converts it to
    RGB and, once the overlay is drawn, back to YUV for the encoder: three conversions and two camera-sized copies per
    frame that this source avoids (docs/performance.md, "Frames as the decoder's planes"). :meth:`open` takes only
    what it reads exactly as OpenCV would: 8-bit 4:2:0 of limited range, even width and height, no rotation to
    apply; any other video, and any that PyAV cannot open or whose first frames do not decode, goes to
    :class:`CaptureSource` (which also keeps its error messages).
    """

    kind = "video"

    def __init__(self, container: Any, stream: Any, name: str, frames: Iterator[Optional[Any]], first: Any) -> None:
        self.container, self.stream, self.name = container, stream, name
        self._frames, self._first = frames, first
        self._lock, self._closed = threading.Lock(), False  # no read of a closed container (PyAV would crash)
        self.fps = _frame_rate(float(stream.guessed_rate or stream.average_rate or 0.0))
        self.frame_count = _frame_count(container, stream, self.fps)
        self.size = (first.width, first.height)

    @classmethod
    def open(cls, path: str, name: str) -> Optional["PlanesSource"]:
        """The source, or None where OpenCV should read the file instead (see the class)."""
        try:
            import av
        except ImportError:
            return None
        try:
            with native_path(path) as target:  # FFmpeg opens the file here and keeps it open
                container = av.open(target)
        except (av.FFmpegError, OSError, ValueError, UnicodeError, ScasegError):
            return None
        try:
            stream = container.streams.video[0] if container.streams.video else None
            context = stream.codec_context if stream is not None else None  # None: PyAV has no decoder for it
            if stream is None or context is None or context.pix_fmt != "yuv420p":
                container.close()
                return None
            stream.thread_type = DECODE_THREADING
            frames = _decoded(container, stream)
            first = None
            for _ in range(MAX_BAD_FRAMES + 1):
                first = next(frames, None)
                if first is not None:
                    break
            if first is None or not _plain_planes(first):
                container.close()
                return None
            return cls(container, stream, name, frames, first)
        except Exception:  # anything PyAV does not read as expected is OpenCV's to read (or refuse) instead
            container.close()
            return None
        except BaseException:
            container.close()
            raise

    def __iter__(self) -> Iterator[Frame]:
        index, bad, pending = 0, 0, 0
        while True:
            with self._lock:
                if self._closed:
                    return
                if self._first is not None:
                    picture, self._first = self._first, None
                else:
                    picture = next(self._frames, _END_OF_FILE)
            if picture is _END_OF_FILE:
                return
            if picture is None:  # a packet that did not decode: counted once a good frame follows it
                bad += 1
                pending += 1
                if bad > MAX_BAD_FRAMES:
                    return
                continue
            self.skipped += pending
            index += pending
            bad = pending = 0
            name = f"{self.name}_{index:06d}"
            if _plain_planes(picture):
                yield Frame(index, name, None, planes=I420(picture.to_ndarray(format="yuv420p")))
            else:  # a picture of another kind mid-stream (a size or format change): as RGB, by FFmpeg's scaler
                yield Frame(index, name, picture.to_ndarray(format="rgb24"))
            index += 1

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.container.close()


def _frame_count(container: Any, stream: Any, fps: float) -> Optional[int]:
    """The frames the container says the stream has, else its duration times ``fps`` (as OpenCV estimates it: Matroska
    and WebM give no count); None when neither is known."""
    if int(stream.frames or 0) > 0:
        return int(stream.frames)
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / 1_000_000  # AV_TIME_BASE
    else:
        return None
    count = int(round(seconds * fps))
    return count if count > 0 else None


# Threads of FFmpeg's H.264 decoder: slices and frames, as many as it sees cores (what OpenCV's capture also uses).
DECODE_THREADING = "AUTO"
_END_OF_FILE = object()


def _decoded(container: Any, stream: Any) -> Iterator[Optional[Any]]:
    """The stream's pictures in order; None for each packet that did not decode; ends where demuxing fails."""
    import av

    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except (av.FFmpegError, OSError):  # a truncated or damaged container: its readable part was all
            try:  # and the pictures still inside the decoder's threads
                yield from stream.codec_context.decode(None)
            except (av.FFmpegError, OSError, ValueError):
                pass
            return
        try:
            pictures = packet.decode()
        except (av.FFmpegError, OSError):
            yield None
            continue
        yield from pictures


def _plain_planes(picture: Any) -> bool:
    """Whether a decoded picture is I420 as the runtime reads it: 8-bit 4:2:0, limited range, even size, upright."""
    return (picture.format.name == "yuv420p" and picture.color_range != 2 and not picture.rotation
            and picture.width % 2 == 0 and picture.height % 2 == 0)


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


def camera_index(spec: str) -> Optional[int]:
    """The camera index ``spec`` names (see CAMERA_INDEX), else None: then it is a URL or a path."""
    return int(spec) if CAMERA_INDEX.fullmatch(spec) else None


def is_url(spec: str) -> bool:
    return "://" in spec


def open_source(spec: str) -> Source:
    """A camera index ("0") or device (/dev/video0), a URL (rtsp://, http://...), an image, a folder of images, or a
    video file; anything else is refused in one sentence before a byte is read."""
    spec = str(spec).strip()
    index = camera_index(spec)
    if index is not None:
        return CaptureSource(index, "camera", f"camera{spec}")
    if is_url(spec):
        if not is_utf8(spec):
            raise ScasegError(f"the URL {spec} is not valid UTF-8; percent-encode its bytes (%FF)")
        stem = Path(spec.split("?")[0].rstrip("/")).stem or "stream"
        return CaptureSource(spec, "stream", stem)
    path = Path(spec).expanduser()
    expected = "expected a video, an image, a folder of images, a camera index or a stream URL"
    if not path.exists():
        raise ScasegError(f"source not found: {spec} ({expected})")
    special = special_file(path)
    if special is not None:
        if VIDEO_DEVICE.fullmatch(os.path.realpath(path)):
            return CaptureSource(str(path), "camera", path.name)
        raise ScasegError(f"the source {spec} is {special}, not a file: {expected}")
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
    return PlanesSource.open(str(path), path.stem) or CaptureSource(str(path), "video", path.stem)
