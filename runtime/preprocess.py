"""The one preprocessing implementation: used by training, calibration, evaluation and the runtime alike.

Convention: images are RGB uint8 (H, W, 3) once loaded; the network input is float32 NCHW,
normalised as (x - mean) / std on the 0..255 scale. Labels are integer (H, W) maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from scaseg.errors import ScasegError


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
    return resize_nearest(work, (sh, sw)).astype(dtype, copy=False)


def resize_nearest(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``cv2.resize(image, (W, H), interpolation=cv2.INTER_NEAREST)`` for ``size`` (H, W): the same pixels.

    Scaling up (a network-sized map to a camera frame), OpenCV's per-pixel pass runs only over the source's rows
    (rows of the output width), and each output row is then a copy of the row it picks, by the rule OpenCV uses
    (row ``floor(y / (H / h))``, in doubles): about a third of the work at 1080p. Shrinking goes to OpenCV at once.
    """
    th, tw = int(size[0]), int(size[1])
    sh, sw = image.shape[:2]
    if (sh, sw) == (th, tw):
        return image
    if th <= sh:
        return cv2.resize(image, (tw, th), interpolation=cv2.INTER_NEAREST)
    rows = image if sw == tw else cv2.resize(image, (tw, sh), interpolation=cv2.INTER_NEAREST)
    picks = np.minimum(np.floor(np.arange(th) * (1.0 / (th / sh))), sh - 1).astype(np.intp)
    return rows.take(picks, axis=0)


def label_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """The dtype of a predicted label map: uint8 while class ids fit (<= 256 classes), else uint16."""
    return np.uint8 if num_classes <= 256 else np.uint16


def logits_to_labels(logits: np.ndarray) -> np.ndarray:
    """(C, H, W) or (B, C, H, W) logits -> uint8/uint16 labels (argmax over classes, first maximum wins).

    A running max over the class planes reads memory contiguously; np.argmax over a leading axis strides
    across planes and is slower on per-frame hot paths.
    """
    axis = 0 if logits.ndim == 3 else 1
    num_classes = logits.shape[axis]
    planes = np.moveaxis(logits, axis, 0)
    labels: np.ndarray = np.zeros(planes.shape[1:], dtype=label_dtype(num_classes))
    best = planes[0].copy()
    for c in range(1, num_classes):
        better = planes[c] > best
        labels[better] = c
        np.maximum(best, planes[c], out=best)
    return labels

