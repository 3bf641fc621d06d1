"""Frame sources for scaseg-infer: a video file, a camera, a network stream, one image or a folder of images."""
from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from scaseg.errors import ScasegError
from scaseg.data.images import read_image, to_rgb_uint8
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
