"""Video files out: encoded through PyAV (FFmpeg's own libraries), and counted back on close.

Every video a command writes (scaseg-infer's overlay, scaseg-synth's drive) goes through :class:`VideoFile`:
H.264 (libx264, preset ultrafast) in .mp4/.m4v/.mov/.mkv, Motion JPEG in .avi (scaseg.suffixes.VIDEO_CONTAINERS),
or any encoder FFmpeg has by name (``codec``: e.g. ``h264_nvenc`` on a desktop NVIDIA GPU).

Why PyAV rather than cv2.VideoWriter (measured side by side by benchmarks/bench_video_io.py; the figures are in
docs/performance.md): OpenCV's pip wheels encode MPEG-4 part 2 only, a codec browsers and many players refuse, and
convert each frame to YUV in FFmpeg's single-threaded scaler; here OpenCV's vectorised ``cvtColor`` makes the
4:2:0 planes (BT.601, limited range, as the stream says in its header) and libx264 encodes with its own threads.
Frames of odd width or height are padded by one repeated row or column (4:2:0 needs even sizes).

A picture may also arrive as :class:`I420` planes (what a decoder gives, blended in place by scaseg-infer's overlay):
those go to the encoder as they are, with no colour conversion at all.
"""
from __future__ import annotations

import contextlib
import fractions
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Optional, Union

import cv2
import numpy as np

from scaseg.data.images import native_path
from scaseg.errors import ScasegError
from scaseg.suffixes import VIDEO_CONTAINERS

#: Options per encoder: speed first (a 1080p frame in a few milliseconds), quality FFmpeg's default (CRF 23).
ENCODER_OPTIONS = {"libx264": {"preset": "ultrafast", "crf": "23"}, "h264_nvenc": {"preset": "p1"}}
# Encoders fed full-range JPEG YUV (FFmpeg's scaler makes it); every other one gets OpenCV's limited-range I420.
_FULL_RANGE = {"mjpeg": "yuvj420p"}
# BT.601 (SMPTE 170M) primaries, transfer and matrix, limited ("MPEG") range: what cv2.COLOR_*2YUV_I420 computes.
_BT601, _LIMITED = 6, 1


@dataclass(frozen=True)
class I420:
    """A picture as 4:2:0 planes, BT.601 limited range (what H.264 streams mostly hold, and what the writer encodes):
    one (H * 3 / 2, W) uint8 array, the Y plane then the U and V planes (H / 2 x W / 2 each); H and W are even.

    cv2.COLOR_RGB2YUV_I420 and cv2.COLOR_YUV2RGB_I420 convert to and from RGB (``from_rgb``, ``rgb``): the one pair of
    conversions the runtime uses for these planes. ``yuv_to_rgb`` applies the second's matrix to a picture whose
    chroma is already at full size (OpenCV's converter takes none such in limited range).
    """

    planes: np.ndarray

    def __post_init__(self) -> None:
        rows, width = self.planes.shape
        if (self.planes.dtype != np.uint8 or not self.planes.flags.c_contiguous or rows % 3 or rows == 0
                or width % 2):
            raise ValueError(f"I420 planes must be one contiguous (H * 3 / 2, W) uint8 array with H and W even, got "
                             f"{self.planes.shape} {self.planes.dtype}")

    @property
    def hw(self) -> tuple[int, int]:
        return self.planes.shape[0] * 2 // 3, self.planes.shape[1]

    def split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the Y (H, W), U and V (H / 2, W / 2) planes."""
        h, w = self.hw
        chroma = self.planes[h:].reshape(2, h // 2, w // 2)  # U's bytes then V's, each plane W / 2 wide
        return self.planes[:h], chroma[0], chroma[1]

    def rgb(self) -> np.ndarray:
        """The picture as RGB uint8 (H, W, 3)."""
        return cv2.cvtColor(self.planes, cv2.COLOR_YUV2RGB_I420)

    @classmethod
    def from_rgb(cls, rgb: np.ndarray) -> "I420":
        """An RGB uint8 (H, W, 3) picture of even H and W as planes."""
        return cls(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420))

    @staticmethod
    def yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 Y, U, V samples (chroma at full size, limited range) -> RGB uint8, rounded and clipped as
        cv2.COLOR_YUV2RGB_I420 does (its BT.601 constants below, Y below 16 taken as 16;
        tests/core/data/test_video.py checks them against it)."""
        lifted = yuv.copy()
        np.maximum(lifted[..., 0], 16, out=lifted[..., 0])
        return cv2.transform(lifted, _RGB_FROM_YUV)


# cv2.COLOR_YUV2RGB_I420's fixed-point BT.601 constants (OpenCV's ITUR_BT_601_C*, in units of 2^-20) as an affine map
# from (Y, U, V, 1) to (R, G, B): R = CY (Y - 16) + CVR (V - 128), G = CY (Y - 16) + CUG (U - 128) + CVG (V - 128),
# B = CY (Y - 16) + CUB (U - 128), with Y - 16 at least 0.
_CY, _CVR, _CVG, _CUG, _CUB = 1220542, 1673527, -852492, -409993, 2116026
_YUV_MATRIX = np.array([[_CY, 0, _CVR], [_CY, _CUG, _CVG], [_CY, _CUB, 0]], dtype=np.float64) / (1 << 20)
_RGB_FROM_YUV = np.hstack([_YUV_MATRIX, -_YUV_MATRIX @ np.array([[16.0], [128.0], [128.0]])]).astype(np.float32)


class VideoFile:
    """A video written frame by frame; it opens at the first frame's size and, on close, checks that the file plays.

    A write that fails (a full disk, an encoder that cannot open) raises one sentence; ``close`` finalises the
    container, reopens the file and compares its frame count with the frames written. ``name`` is the destination
    shown in messages (the file written may be a temporary beside it); ``suffix`` picks the container when the
    path's own suffix is a temporary one; ``codec`` overrides the container's default encoder.
    """

    def __init__(self, path: str | os.PathLike, fps: float, name: Optional[str] = None, suffix: str = "",
                 codec: Optional[str] = None) -> None:
        self.path, self.fps, self.name = Path(path), float(fps), name or str(path)
        ext = (suffix or self.path.suffix.lower().split(".tmp")[-1] or ".mp4").lower()
        self.format, default_codec = VIDEO_CONTAINERS.get(ext, VIDEO_CONTAINERS[".mp4"])
        self.codec = codec or default_codec
        self.container: Any = None
        self.stream: Any = None
        self.size: Optional[tuple[int, int]] = None  # (W, H) of the frames given; the stream's is even
        self.frames = 0
        self._name = contextlib.ExitStack()  # keeps the name FFmpeg opens (see native_path) while the file is open

    def _open(self, width: int, height: int) -> None:
        import av

        self.size = (width, height)
        # FFmpeg opens the file when the first frame is written, so the name it is given must last until then.
        target = self._name.enter_context(native_path(self.path))
        try:
            self.container = av.open(target, mode="w", format=self.format)
        except (av.FFmpegError, OSError) as exc:
            self._name.close()
            raise ScasegError(f"cannot write the video {self.name}: {_reason(exc)}") from None
        try:
            self.stream = self.container.add_stream(self.codec, rate=fractions.Fraction(self.fps).limit_denominator(1001))
            self.stream.width, self.stream.height = width + width % 2, height + height % 2
            self.stream.pix_fmt = _FULL_RANGE.get(self.codec, "yuv420p")
            self.stream.options = dict(ENCODER_OPTIONS.get(self.codec, {}))
            if self.codec not in _FULL_RANGE:
                ctx = self.stream.codec_context
                ctx.color_primaries = ctx.color_trc = ctx.colorspace = _BT601
                ctx.color_range = _LIMITED
            self.stream.codec_context.open()
        except (av.FFmpegError, ValueError, OSError) as exc:
            self.container.close()
            self._name.close()
            raise ScasegError(f"FFmpeg cannot encode {self.codec} video of {width}x{height} into {self.name}: "
                              f"{_reason(exc)}") from None

    @property
    def takes_planes(self) -> bool:
        """Whether I420 planes go to this writer's encoder as they are (an encoder fed full-range YUV, Motion JPEG's,
        gets them converted back to RGB first)."""
        return self.codec not in _FULL_RANGE

    def write(self, image: Union[np.ndarray, I420], rgb: bool = False) -> None:
        """Append one frame: BGR (OpenCV's order; ``rgb=True`` for RGB) or grayscale uint8 (H, W[, 3]), or I420 planes.

        A frame of another size than the first is resized to it (a camera that changed resolution mid-stream).
        """
        if isinstance(image, I420):
            if self.container is None:
                self._open(image.hw[1], image.hw[0])
            if image.hw[::-1] == self.size and self.takes_planes:  # as they are: no conversion at all
                self._encode(_av_frame(image.planes, "yuv420p"))
                self.frames += 1
                return
            image, rgb = image.rgb(), True
        if image.ndim == 2:
            image, rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), False
        if self.container is None:
            self._open(image.shape[1], image.shape[0])
        assert self.size is not None
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)
        pad_w, pad_h = self.size[0] % 2, self.size[1] % 2
        if pad_w or pad_h:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        self._encode(self._frame(image, rgb))
        self.frames += 1

    def _frame(self, image: np.ndarray, rgb: bool) -> Any:
        if self.codec in _FULL_RANGE:  # FFmpeg's scaler makes the full-range planes JPEG wants
            return _av_frame(np.ascontiguousarray(image, dtype=np.uint8), "rgb24" if rgb else "bgr24")
        planes = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420 if rgb else cv2.COLOR_BGR2YUV_I420)
        return _av_frame(np.asarray(planes, dtype=np.uint8), "yuv420p")

    def _encode(self, frame: Any) -> None:
        import av

        if frame is not None:
            frame.pts = self.frames
            frame.time_base = self.stream.codec_context.time_base
        try:
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            self._abandon()
            raise ScasegError(f"cannot write {self.name}: {_reason(exc)}; nothing was written") from None

    def _abandon(self) -> None:
        """After a failed write: release the file and the encoder without flushing (the caller removes the file)."""
        container, self.container = self.container, None
        try:
            container.close()
        except Exception:  # already failing: the first error is the one the user sees
            pass
        self._name.close()

    def close(self, check: bool = True, exact: bool = True) -> None:
        """Flush the encoder, finalise the container (writes the index) and check it holds every frame written.

        ``exact=False`` after Ctrl-C: the interrupt may have fallen between a frame's write and its count.
        """
        if self.container is None:
            return
        import av

        container, self.container = self.container, None
        try:
            for packet in self.stream.encode(None):
                container.mux(packet)
            container.close()
        except (av.FFmpegError, OSError) as exc:
            raise ScasegError(f"cannot write {self.name}: {_reason(exc)}; nothing was written") from None
        finally:
            self._name.close()
        if check:
            check_video(self.path, self.frames, self.name, slack=0 if exact else 1)


def _av_frame(array: np.ndarray, fmt: str) -> Any:
    import av

    return av.VideoFrame.from_ndarray(array, format=fmt)


def _reason(exc: BaseException) -> str:
    """FFmpeg's or the OS's reason, one line, with the likely cause of an I/O error."""
    text = getattr(exc, "strerror", None) or str(exc)
    if getattr(exc, "errno", None) in (28, 27):  # ENOSPC, EFBIG
        return f"{text} (disk full or file size limit)"
    return " ".join(str(text).split())


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
