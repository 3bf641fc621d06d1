"""Drawing a label map: palette colouring, blending over the image, and a class legend (pure functions)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import cv2
import numpy as np

from scaseg.data.video import I420
from scaseg.runtime.preprocess import resize_nearest

# A list of RGB triples, or an (N, 3) uint8 array such as palette_lut() returns.
Palette = Union[Sequence[Sequence[int]], np.ndarray]


def palette_lut(palette: Palette, size: int = 65536) -> np.ndarray:
    """A (size, 3) uint8 lookup table; ids without a colour (e.g. 255 = ignore) map to black."""
    lut = np.zeros((size, 3), dtype=np.uint8)
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:size]
    lut[: len(colours)] = colours
    return lut


def colorize(labels: np.ndarray, palette: Palette) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) RGB uint8 colour mask; ``palette`` may be a ready palette_lut().

    uint8 labels go through OpenCV's vectorised table lookup (cv2.LUT, several times faster than NumPy's fancy
    index over a frame); wider ids through a 65536-entry table.
    """
    if isinstance(palette, np.ndarray) and palette.ndim == 2 and palette.shape[0] >= 256:
        lut = palette
    else:
        lut = palette_lut(palette, 256 if labels.dtype == np.uint8 else 65536)
    if labels.dtype == np.uint8:
        return cv2.LUT(cv2.merge((labels, labels, labels)), np.ascontiguousarray(lut[:256]).reshape(256, 1, 3))
    labels = np.clip(labels, 0, lut.shape[0] - 1).astype(np.intp)
    return lut[labels]


def blend(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour mask over an RGB image: ``alpha`` = weight of the mask (0 = image only, 1 = mask only)."""
    if image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in shape")
    alpha = _weight(alpha)
    return cv2.addWeighted(mask, alpha, image, 1.0 - alpha, 0.0)


def _weight(alpha: float) -> float:
    """The mask's weight in a blend: ``alpha`` clamped to 0..1."""
    return float(min(max(alpha, 0.0), 1.0))


def draw_legend(
    image: np.ndarray,
    class_names: Sequence[str],
    palette: Palette,
    classes: Optional[Union[Sequence[int], np.ndarray]] = None,
    max_rows: int = 20,
    copy: bool = True,
) -> np.ndarray:
    """Draw a colour key (swatch + name) in the top-left corner; ``classes`` limits it to those ids.

    ``copy=False`` draws into ``image`` itself (a picture the caller owns) instead of a copy of it."""
    ids = list(range(len(class_names))) if classes is None else [int(c) for c in classes if 0 <= int(c) < len(class_names)]
    ids = ids[:max_rows]
    out = image.copy() if copy else image
    if not ids:
        return out
    h, w = out.shape[:2]
    # Scale text with the frame so the legend stays readable on 4K and on thumbnails alike.
    scale = max(0.3, min(h, w) / 900.0)
    thick = max(1, int(round(scale * 1.5)))
    row = int(round(22 * scale / 0.6))
    sw = int(round(row * 0.8))
    names = [str(class_names[i]) for i in ids]
    text_w = max(cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for n in names)
    box_w = min(w, sw + text_w + 3 * 4)
    box_h = min(h, row * len(ids) + 4)
    # Darken the legend's background so names read over any scene.
    out[:box_h, :box_w] = (out[:box_h, :box_w].astype(np.uint16) * 2 // 5).astype(np.uint8)
    for r, (cid, name) in enumerate(zip(ids, names)):
        y0 = 2 + r * row
        if y0 + sw > h:
            break
        colour = tuple(int(v) for v in palette[cid])
        cv2.rectangle(out, (4, y0 + 2), (4 + sw, y0 + sw), colour, thickness=-1)
        cv2.putText(out, name, (8 + sw, y0 + sw - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def render_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    palette: Palette,
    alpha: float = 0.5,
    class_names: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """Colour ``labels``, blend it over the image, add a legend of the classes present.

    ``labels`` may be smaller than the image (the network's resolution, as Predictor.finish(..., to_source=False)
    gives it): the colour mask is made at that size and scaled up to the image by nearest neighbour, which picks the
    same label for every pixel as scaling the labels up first (the picture is the same), at a fraction of the work.
    """
    mask = colorize(labels, palette)
    h, w = image.shape[:2]
    out = blend(image, resize_nearest(mask, (h, w)), alpha)
    if class_names is not None:
        present = np.flatnonzero(np.bincount(labels.ravel(), minlength=len(class_names))[: len(class_names)])
        out = draw_legend(out, class_names, palette, present, copy=False)  # ``out`` is this function's own
    return out


def palette_planes(palette: Palette) -> np.ndarray:
    """A (3, 256) uint8 table: the Y, U and V of each of the first 256 palette colours, as the video writer's
    RGB -> I420 conversion (I420.from_rgb) makes them for a flat block of that colour."""
    lut = palette_lut(palette, 256)
    blocks = I420.from_rgb(np.repeat(np.repeat(lut[None], 2, axis=0), 2, axis=1))  # one 2x2 block per colour
    y, u, v = blocks.split()
    return np.stack([y[0, ::2], u[0], v[0]])


def render_overlay_planes(planes: I420, labels: np.ndarray, table: np.ndarray, alpha: float = 0.5) -> I420:
    """:func:`render_overlay` for a frame given as I420 planes, drawn in the planes (no legend): the label map is
    coloured at its own size in Y, U and V (``table``: palette_planes()), each scaled up to its plane by nearest
    neighbour, and blended plane by plane, so no camera-sized RGB picture is made.

    The blend of YUV values is the YUV of the blend of RGB values (the conversion is affine), so the picture is the
    one render_overlay draws, then converted for the writer, up to rounding, and a frame's YUV outside the RGB cube
    is kept instead of clipped (docs/runtime.md, "Frames as the decoder's planes", counts the pixels that differ).
    """
    if labels.dtype != np.uint8:
        raise ValueError("render_overlay_planes colours uint8 label maps (up to 256 classes); use render_overlay")
    alpha = _weight(alpha)
    out = I420(np.empty_like(planes.planes))
    for channel, (src, dst) in enumerate(zip(planes.split(), out.split())):
        mask = resize_nearest(cv2.LUT(labels, np.ascontiguousarray(table[channel])), src.shape)
        cv2.addWeighted(mask, alpha, src, 1.0 - alpha, 0.0, dst=dst)
    return out
