"""The camera and the canvas: a pinhole 1.5 m above the road, and an image and label map painted together.

Every polygon is filled into the image and, with its class, into the label map by the same raster call, so the
labels are exact.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from scaseg.data.synth.world import SKY, World

CAM_HEIGHT = 1.5  # metres
NEAR = 0.5  # metres; geometry closer than this is clipped
FAR = 400.0
_SHIFT = 4  # fixed-point bits for OpenCV's polygon filling: sub-pixel vertex positions
_ONE = 1 << _SHIFT


class Canvas:
    """The image and the label map, always painted together so the label is exact."""

    def __init__(self, world: World, h: int, w: int, cam_z: float) -> None:
        self.h, self.w = h, w
        self.f = world.focal * w
        self.cx, self.cy = world.cx * w, world.horizon * h
        self.cam_z = cam_z
        self.image = np.zeros((h, w, 3), dtype=np.uint8)
        self.label = np.full((h, w), SKY, dtype=np.uint8)

    def project(self, x, y, z) -> np.ndarray:
        """World points (metres; y = height above the road; z along the street) -> (..., 2) pixel coordinates."""
        z = np.maximum(np.asarray(z, dtype=np.float64) - self.cam_z, NEAR)
        px = self.cx + self.f * np.asarray(x, dtype=np.float64) / z
        py = self.cy + self.f * (CAM_HEIGHT - np.asarray(y, dtype=np.float64)) / z
        # Vertices at a clipped depth can land far outside the image: bound them so fixed point fits int32.
        px, py = np.broadcast_arrays(np.clip(px, -1e5, 1e5), np.clip(py, -1e5, 1e5))
        return np.stack([px, py], axis=-1).reshape(-1, 2) if px.ndim < 2 else np.stack([px, py], axis=-1)

    @staticmethod
    def _fixed(pts: np.ndarray) -> np.ndarray:
        # Fixed point with _SHIFT fraction bits (callers keep coordinates within +-1e5 pixels).
        return (pts * _ONE).round().astype(np.int32)

    def fill(self, polys, colour, cls: Optional[int]) -> None:
        """Fill polygons (a list of (N, 2) arrays or one (P, N, 2) array) in the image and, unless ``cls`` is None,
        with ``cls`` in the label."""
        fixed = list(self._fixed(polys)) if isinstance(polys, np.ndarray) and polys.ndim == 3 else \
            [self._fixed(np.asarray(p, dtype=np.float64)) for p in polys]
        cv2.fillPoly(self.image, fixed, tuple(float(c) for c in colour), cv2.LINE_8, _SHIFT)
        if cls is not None:
            cv2.fillPoly(self.label, fixed, int(cls), cv2.LINE_8, _SHIFT)

    def disc(self, centre, radius: float, colour, cls: Optional[int], sides: int = 16) -> None:
        """A filled circle as a polygon (same rasteriser as everything else)."""
        radius = min(radius, 1e5)
        self.fill([np.asarray(centre, dtype=np.float64) + radius * _unit_circle(sides)], colour, cls)

    def darken(self, polys, factor: float) -> None:
        """Multiply the image under the polygons by ``factor`` (shadows: image only)."""
        fixed = [self._fixed(np.asarray(p, dtype=np.float64)) for p in polys]
        allpts = np.concatenate(fixed) >> _SHIFT
        x0, y0 = np.maximum(allpts.min(axis=0), 0)
        x1, y1 = np.minimum(allpts.max(axis=0) + 2, (self.w, self.h))
        if x1 <= x0 or y1 <= y0:
            return
        # Work inside the polygons' bounding box only: shadows are small and many.
        mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        cv2.fillPoly(mask, fixed, 1, cv2.LINE_8, _SHIFT, offset=(-int(x0) * _ONE, -int(y0) * _ONE))
        region = self.image[y0:y1, x0:x1]
        sel = mask.astype(bool)
        region[sel] = (region[sel] * factor).astype(np.uint8)


_CIRCLES: dict[int, np.ndarray] = {}


def _unit_circle(sides: int) -> np.ndarray:
    if sides not in _CIRCLES:
        t = np.linspace(0, 2 * np.pi, sides, endpoint=False)
        _CIRCLES[sides] = np.column_stack([np.cos(t), np.sin(t)])
    return _CIRCLES[sides]


def ground_quad(c: Canvas, x0: float, x1: float, z0: float, z1: float, y: float = 0.0) -> np.ndarray:
    return c.project([x0, x1, x1, x0], y, [z0, z0, z1, z1])


def wall_quad(c: Canvas, x: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    return c.project(x, [y0, y0, y1, y1], [z0, z1, z1, z0])


def visible_z(c: Canvas, z0: float, z1: float) -> Optional[tuple[float, float]]:
    z0, z1 = max(z0, c.cam_z + NEAR), min(z1, c.cam_z + FAR)
    return (z0, z1) if z1 > z0 else None
