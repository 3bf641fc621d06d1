"""Frame sources for scaseg-infer: a video file, a camera, a network stream, one image or a folder of images.

What may be a source (:func:`open_source`, the one rule): a regular file (video or image), a folder of images, a
camera the user named (an index of ASCII digits, or a ``/dev/video*`` device), or a URL. Any other special file (a
FIFO, a socket, another device) is refused at once: reading one can block forever or never end.
"""
from __future__ import annotations

import math
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from scaseg.cli import is_utf8, special_file
from scaseg.errors import ScasegError
from scaseg.data.images import native_path, read_image, to_rgb_uint8
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


@dataclass
class Frame:
    """One input image; ``image`` is None when it could not be decoded (skipped and counted)."""

    index: int
    name: str
    image: Optional[np.ndarray]
    error: str = ""


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
    return CaptureSource(str(path), "video", path.stem)
