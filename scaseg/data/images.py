"""Image decoding, once for every reader: files and encoded bytes -> RGB uint8 (H, W, 3).

Datasets, calibration, the runtime's sources and the benchmark all decode through here, with one flag
(IMREAD_UNCHANGED, then :func:`to_rgb_uint8`), so 16-bit, grayscale and RGBA files mean the same everywhere.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from scaseg.errors import ScasegError


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
    if not os.path.isfile(path):
        raise ScasegError(f"image not found: {path}")
    return decode_image(np.fromfile(path, dtype=np.uint8).tobytes(), f"the image {path}")
