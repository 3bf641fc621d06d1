"""Image files in and out: decoding once for every reader, and writing that checks what it wrote.

Datasets, calibration, the runtime's sources and the benchmark all decode through here, with one flag
(IMREAD_UNCHANGED, then :func:`to_rgb_uint8`), so 16-bit, grayscale and RGBA files mean the same everywhere.
Every image and video a command writes goes through :func:`write_image` / :class:`VideoFile`, which fail in one
sentence when the bytes did not arrive (OpenCV's writers report a full disk by returning False, or not at all).
Every file name handed to OpenCV goes through :func:`native_path` (OpenCV crashed on names that are not UTF-8).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import cv2
import numpy as np

from pathlib import Path
from typing import Iterator, Optional

from scaseg.cli import is_utf8, special_file
from scaseg.errors import ScasegError
from scaseg.fileio import write_bytes
from scaseg.suffixes import VIDEO_FOURCC


def to_rgb_uint8(image: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """Bring any decoded image to RGB uint8 (H, W, 3).

    Accepts grayscale (H, W) or (H, W, 1), 3-channel, and 4-channel (alpha dropped) arrays, in uint8,
    uint16 (scaled by 1/257) or float (0..1 assumed when max <= 1, else 0..255). ``bgr`` says the
    channel order of a colour input is OpenCV's BGR/BGRA.
    """
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        raise ScasegError("the image is empty or could not be decoded")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ScasegError(f"cannot use an image of shape {tuple(image.shape)}: expected (H, W), (H, W, 3) or (H, W, 4)")
    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 + 32767) // 65535
        image = image.astype(np.uint8)
    elif image.dtype.kind == "f":
        scale = 255.0 if float(np.nanmax(image)) <= 1.0 else 1.0
        image = np.clip(np.nan_to_num(image) * scale, 0, 255).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(image)


def decode_image(data: bytes, what: str = "the image") -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, ...) to RGB uint8; undecodable bytes raise ScasegError naming ``what``."""
    buf = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if image is None:
        raise ScasegError(f"cannot decode {what} (not an image, or corrupt)")
    return to_rgb_uint8(image, bgr=True)


def read_image(path: str) -> np.ndarray:
    """Read an image file as RGB uint8; unreadable files raise ScasegError naming the path."""
    if not os.path.isfile(path):  # a FIFO would block the read below forever
        special = special_file(path)
        raise ScasegError(f"the image {path} is {special}, not a file" if special else f"image not found: {path}")
    return decode_image(np.fromfile(path, dtype=np.uint8).tobytes(), f"the image {path}")


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode ``image`` (OpenCV channel order) in the format of the suffix (.png if none) and write it, checked."""
    p = Path(path)
    ok, data = cv2.imencode(p.suffix or ".png", image)
    if not ok:
        raise ScasegError(f"OpenCV cannot encode a {image.dtype} image of shape {tuple(image.shape)} as {p.suffix or '.png'}")
    write_bytes(p, data.tobytes())


@contextlib.contextmanager
def native_path(path: str | os.PathLike) -> Iterator[str]:
    """``path`` as text OpenCV can take: itself when it is valid UTF-8, else a link with an ASCII name to it.

    The link lives in a private temporary folder, removed on exit: open the file (cv2.VideoCapture, cv2.VideoWriter)
    inside the ``with``; the open file stays usable after the link is gone.
    """
    text = os.fspath(path)
    if is_utf8(text):
        yield text
        return
    suffix = os.path.splitext(text)[1]
    folder = ""
    try:
        folder = tempfile.mkdtemp(prefix="scaseg-name-")
        link = os.path.join(folder, "file" + (suffix if suffix.isascii() else ""))
        if not is_utf8(link):
            raise OSError("the temporary folder is not named in UTF-8")
        os.symlink(os.path.abspath(text), link)
    except OSError as exc:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        raise ScasegError(f"cannot open {text}: OpenCV takes only UTF-8 file names and no link to it could be "
                          f"made ({exc.strerror or exc}); rename it") from None
    try:
        yield link
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class VideoFile:
    """cv2.VideoWriter that opens at the first frame's size and, on close, checks that the file plays.

    OpenCV's writer drops frames silently when the disk fills and leaves a file without its index: ``close``
    reopens the file and compares its frame count with the frames written, and raises one sentence if they differ.
    ``name`` is the destination shown in messages (the file written may be a temporary beside it).
    """

    def __init__(self, path: str | os.PathLike, fps: float, name: Optional[str] = None, suffix: str = "") -> None:
        self.path, self.fps, self.name = Path(path), float(fps), name or str(path)
        self.writer: Optional[cv2.VideoWriter] = None
        self.size: Optional[tuple[int, int]] = None
        self.frames = 0
        ext = (suffix or self.path.suffix.lower().split(".tmp")[-1] or ".mp4").lower()
        self.fourcc = VIDEO_FOURCC.get(ext, "mp4v")

    def write(self, bgr: np.ndarray) -> None:
        """Append one frame (BGR or grayscale uint8); a frame of another size is resized to the first one's."""
        if self.writer is None:
            self.size = (bgr.shape[1], bgr.shape[0])
            with native_path(self.path) as target:  # FFmpeg opens the file here and keeps it open
                self.writer = cv2.VideoWriter(target, cv2.VideoWriter.fourcc(*self.fourcc), self.fps, self.size)
            if not self.writer.isOpened():
                raise ScasegError(f"OpenCV cannot write a {self.fourcc} video of {self.size[0]}x{self.size[1]} to "
                                  f"{self.name}")
        if (bgr.shape[1], bgr.shape[0]) != self.size:  # a camera that changed resolution mid-stream
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_LINEAR)
        self.writer.write(np.ascontiguousarray(bgr))
        self.frames += 1

    def close(self, check: bool = True, exact: bool = True) -> None:
        """Finalise the container (writes the index) and check it holds every frame written.

        ``exact=False`` after Ctrl-C: the interrupt may have fallen between a frame's write and its count.
        """
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        if check:
            check_video(self.path, self.frames, self.name, slack=0 if exact else 1)


def check_video(path: str | os.PathLike, frames: int, name: Optional[str] = None, slack: int = 0) -> None:
    """Raise ScasegError unless ``path`` opens as a video of ``frames`` (+- ``slack``) frames."""
    shown = name or str(path)
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    cap = None
    if size:
        with native_path(path) as target:
            cap = cv2.VideoCapture(target)
    try:
        if cap is None or not cap.isOpened():
            raise ScasegError(f"cannot write {shown}: the video file is incomplete ({size} bytes; disk full?); "
                              "nothing was written")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count <= 0:  # a container without a frame count in its header: count by decoding
            while cap.grab():
                count += 1
        if abs(count - frames) > slack or count == 0:
            raise ScasegError(f"cannot write {shown}: the video holds {count} of the {frames} frames written "
                              "(disk full?); nothing was written")
    finally:
        if cap is not None:
            cap.release()
