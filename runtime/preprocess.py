"""The one preprocessing implementation: used by training, calibration, evaluation and the runtime alike.

Convention: images are RGB uint8 (H, W, 3) once loaded; the network input is float32 NCHW,
normalised as (x - mean) / std on the 0..255 scale. Labels are integer (H, W) maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from scaseg.runtime.errors import ScasegError


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


def read_image(path: str) -> np.ndarray:
    """Read an image file as RGB uint8; unreadable files raise ScasegError naming the path."""
    data = np.fromfile(path, dtype=np.uint8) if _exists(path) else None
    if data is None:
        raise ScasegError(f"image not found: {path}")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ScasegError(f"cannot decode the image {path} (not an image, or corrupt)")
    return to_rgb_uint8(image, bgr=True)


def _exists(path: str) -> bool:
    import os

    return os.path.isfile(path)


@dataclass(frozen=True)
class Geometry:
    """How an image was brought to the network size, so outputs can be mapped back."""

    src_hw: tuple[int, int]  # original (H, W)
    dst_hw: tuple[int, int]  # network input (H, W)
    content_hw: tuple[int, int]  # (H, W) of the resized image inside the input (== dst_hw unless letterboxed)


def resize_image(image: np.ndarray, size: Optional[Sequence[int]], policy: str = "stretch") -> tuple[np.ndarray, Geometry]:
    """Resize an RGB image to ``size`` (H, W). ``policy``: "stretch" or "letterbox" (keep ratio, pad bottom/right).

    ``size=None`` keeps the image as it is (for models with dynamic spatial axes).
    """
    h, w = image.shape[:2]
    if size is None:
        return image, Geometry((h, w), (h, w), (h, w))
    th, tw = int(size[0]), int(size[1])
    if policy == "stretch":
        out = image if (h, w) == (th, tw) else cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
        return out, Geometry((h, w), (th, tw), (th, tw))
    if policy == "letterbox":
        scale = min(th / h, tw / w)
        ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
        resized = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_LINEAR) if (ch, cw) != (h, w) else image
        out = np.zeros((th, tw, image.shape[2]), dtype=image.dtype)
        out[:ch, :cw] = resized
        return out, Geometry((h, w), (th, tw), (ch, cw))
    raise ScasegError(f"unknown resize policy {policy!r} (expected stretch or letterbox)")


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W), (x - mean) / std on the 0..255 scale."""
    x = image.astype(np.float32)
    x -= np.asarray(mean, dtype=np.float32)
    x *= 1.0 / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(
    image: np.ndarray,
    size: Optional[Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
    policy: str = "stretch",
) -> tuple[np.ndarray, Geometry]:
    """RGB uint8 image -> float32 (3, H, W) network input and the Geometry to undo the resize."""
    resized, geom = resize_image(image, size, policy)
    return normalize(resized, mean, std), geom


def labels_to_source(labels: np.ndarray, geom: Geometry) -> np.ndarray:
    """Map an (h, w) label map at network size back to the source image size (nearest neighbour)."""
    ch, cw = geom.content_hw
    labels = labels[:ch, :cw]
    sh, sw = geom.src_hw
    if labels.shape == (sh, sw):
        return labels
    dtype = labels.dtype
    # cv2.resize has no int64 path; label maps fit in int32/uint16.
    work = labels.astype(np.int32) if dtype not in (np.uint8, np.uint16, np.int16, np.float32) else labels
    out = cv2.resize(work, (sw, sh), interpolation=cv2.INTER_NEAREST)
    return out.astype(dtype, copy=False)


def logits_to_labels(logits: np.ndarray) -> np.ndarray:
    """(C, H, W) or (B, C, H, W) logits -> uint8/uint16 labels (argmax over classes, first maximum wins).

    A running max over the class planes reads memory contiguously; np.argmax over a leading axis strides
    across planes and is slower on per-frame hot paths.
    """
    axis = 0 if logits.ndim == 3 else 1
    num_classes = logits.shape[axis]
    planes = np.moveaxis(logits, axis, 0)
    labels = np.zeros(planes.shape[1:], dtype=np.uint8 if num_classes <= 256 else np.uint16)
    best = planes[0].copy()
    for c in range(1, num_classes):
        better = planes[c] > best
        labels[better] = c
        np.maximum(best, planes[c], out=best)
    return labels


def resize_label(label: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to (H, W)."""
    th, tw = int(size[0]), int(size[1])
    if label.shape[:2] == (th, tw):
        return label
    return cv2.resize(label, (tw, th), interpolation=cv2.INTER_NEAREST)
