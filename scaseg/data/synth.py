"""Synthetic street scenes with exact labels, written as a Cityscapes-layout dataset plus a short video.

A scene is a small 3-D world (a straight street: road, sidewalks, facades with windows, trees, hedges, cars,
people) seen by a pinhole camera 1.5 m above the road. Every shape is projected with the same camera, so sizes
follow the depth, and each polygon is filled into the image and into the label map with the same raster call:
labels are exact. The image then gets what the label does not see: shadows, textures, lane markings, window
panes, lighting and colour casts, blur and sensor noise. Class colours overlap on purpose (grey cars, grey
asphalt, grey concrete and overcast skies; green cars and green trees; blue glass and blue sky), so a model has to
use shape and context. Labels use the real Cityscapes train ids, so the cityscapes reader opens the output with the
19 official classes.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from scaseg.errors import ScasegError, run_cli, version_option
from scaseg.fileio import atomic_dir

ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, PERSON, CAR = 0, 1, 2, 8, 10, 11, 13
EGO = 255  # the camera car's bonnet: Cityscapes "ego vehicle", ignored in training and evaluation
SYNTH_CLASSES = {"road": ROAD, "sidewalk": SIDEWALK, "building": BUILDING, "vegetation": VEGETATION,
                 "sky": SKY, "person": PERSON, "car": CAR}
CITY = "synth"
GENERATOR = "scaseg-synth/1"

# train id -> Cityscapes label id, for the *_gtFine_labelIds.png files (255, the ego vehicle, is id 1).
_TRAIN_TO_ID = np.zeros(256, dtype=np.uint8)
for _train, _id in ((ROAD, 7), (SIDEWALK, 8), (BUILDING, 11), (VEGETATION, 21), (SKY, 23), (PERSON, 24),
                    (CAR, 26), (EGO, 1)):
    _TRAIN_TO_ID[_train] = _id

CAM_HEIGHT = 1.5  # metres
NEAR = 0.5  # metres; geometry closer than this is clipped
FAR = 400.0
_SHIFT = 4  # fixed-point bits for OpenCV's polygon filling: sub-pixel vertex positions
_ONE = 1 << _SHIFT


# --------------------------------------------------------------------------- the world


@dataclass
class _Facade:
    x: float  # building line (metres, signed: <0 left of the camera)
    z0: float
    z1: float
    height: float
    colour: tuple
    floor_h: float
    win_w: float
    win_h: float
    win_step: float
    win_colours: np.ndarray  # (3, 3) three window shades
    win_shade: np.ndarray  # (floors, columns) index into win_colours


@dataclass
class _Car:
    x: float
    z: float  # the visible end's depth (rear for same-direction cars, front for oncoming ones)
    vz: float  # metres per video frame
    w: float
    h: float
    length: float
    colour: tuple
    oncoming: bool


@dataclass
class _Person:
    x: float
    z: float
    vz: float
    height: float
    width: float
    skin: tuple
    hair: tuple
    top: tuple
    bottom: tuple
    phase: float


@dataclass
class _Tree:
    x: float
    z: float
    trunk_h: float
    trunk_colour: tuple
    blobs: np.ndarray  # (n, 4): dx, dy, dz, radius in metres, relative to the trunk top
    colours: np.ndarray  # (n, 3)


@dataclass
class _Hedge:
    x: float
    z0: float
    z1: float
    height: float
    colour: tuple


@dataclass
class _World:
    horizon: float  # fraction of the image height
    cx: float  # vanishing point, fraction of the width
    focal: float  # fraction of the width
    road_l: float
    road_r: float
    line_l: float  # building lines (negative = left)
    line_r: float
    sky_top: tuple
    sky_bottom: tuple
    clouds: np.ndarray  # (n, 5): x, y (fractions), rx, ry (fractions), brightness
    skyline: np.ndarray  # (n, 3): x0, x1 (fractions of W), height (fraction of H)
    skyline_colour: tuple
    road_colour: tuple
    marking_colour: tuple
    lane_xs: list
    crosswalk_z: Optional[float]
    sidewalk_colour: tuple
    curb_colour: tuple
    end_wall: Optional[tuple]  # (z, height, colour)
    facades: list
    hedges: list
    trees: list
    cars: list
    persons: list
    sun_side: int  # -1: sun from the left (right-hand facades lit), +1 the other way
    shadow_w: float
    shade: float
    gains: np.ndarray
    gamma: float
    blur: float
    noise: float
    illum: np.ndarray  # low-frequency illumination field (small grid)
    ego: Optional[tuple]  # (height fraction, colour)
    speed: float  # camera metres per video frame (0 for a still)
    extra: dict = field(default_factory=dict)


def _grey(rng: np.random.Generator, lo: int, hi: int, tint: float = 8.0) -> tuple:
    v = rng.uniform(lo, hi)
    return tuple(float(np.clip(v + rng.uniform(-tint, tint), 0, 255)) for _ in range(3))


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float = 18.0) -> tuple:
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in colour)


def _building_colour(rng: np.random.Generator) -> tuple:
    family = rng.choice(["concrete", "sand", "brick", "white", "pastel", "dark"], p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.1])
    if family == "concrete":
        return _grey(rng, 85, 190)
    if family == "sand":
        return _jitter(rng, (200, 180, 140), 25)
    if family == "brick":
        return _jitter(rng, (150, 75, 55), 25)
    if family == "white":
        return _grey(rng, 200, 240, 5)
    if family == "pastel":
        return _jitter(rng, [(225, 215, 150), (175, 205, 170), (170, 190, 215), (220, 175, 170)][rng.integers(4)], 15)
    return _grey(rng, 45, 85)


def _green(rng: np.random.Generator) -> tuple:
    kind = rng.choice(["green", "dark", "olive", "autumn"], p=[0.45, 0.25, 0.2, 0.1])
    base = {"green": (70, 120, 40), "dark": (40, 70, 35), "olive": (105, 110, 70), "autumn": (150, 105, 45)}[kind]
    return _jitter(rng, base, 20)


def _car_colour(rng: np.random.Generator) -> tuple:
    kind = rng.choice(["grey", "white", "black", "red", "blue", "green", "beige"], p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05])
    if kind == "grey":
        return _grey(rng, 80, 170, 4)
    if kind == "white":
        return _grey(rng, 200, 240, 4)
    if kind == "black":
        return _grey(rng, 20, 55, 4)
    base = {"red": (160, 30, 30), "blue": (40, 60, 140), "green": (50, 90, 50), "beige": (190, 175, 140)}[kind]
    return _jitter(rng, base, 20)


def _cloth(rng: np.random.Generator) -> tuple:
    if rng.random() < 0.5:
        return _grey(rng, 20, 200, 6)
    return tuple(float(c) for c in rng.uniform(20, 220, size=3))


def _make_world(rng: np.random.Generator, length: float = 0.0) -> _World:
    """Draw a random street; ``length`` metres of camera travel (video) extend it ahead."""
    horizon = rng.uniform(0.36, 0.5)
    focal = rng.uniform(0.55, 0.9)
    road_l, road_r = rng.uniform(2.5, 7.0), rng.uniform(2.0, 8.0)
    line_l, line_r = -(road_l + rng.uniform(2.0, 6.0)), road_r + rng.uniform(2.0, 6.0)
    z_end = length + rng.uniform(60, 220)
    overcast = rng.random() < 0.35
    if overcast:  # grey skies: the same greys as concrete and asphalt
        sky_top, sky_bottom = _grey(rng, 150, 205, 4), _grey(rng, 175, 230, 4)
    elif rng.random() < 0.15:  # low sun
        sky_top, sky_bottom = _jitter(rng, (90, 110, 160), 15), _jitter(rng, (235, 180, 130), 15)
    else:
        sky_top, sky_bottom = _jitter(rng, (60, 120, 200), 20), _jitter(rng, (170, 200, 230), 15)
    n_clouds = int(rng.integers(0, 7))
    clouds = np.column_stack([rng.uniform(0, 1, n_clouds), rng.uniform(0, horizon * 0.8, n_clouds),
                              rng.uniform(0.05, 0.2, n_clouds), rng.uniform(0.015, 0.05, n_clouds),
                              rng.uniform(0.1, 0.6, n_clouds)]) if n_clouds else np.zeros((0, 5))
    n_sky = int(rng.integers(4, 16))
    xs = np.sort(rng.uniform(0, 1, n_sky))
    skyline = np.column_stack([xs, xs + rng.uniform(0.03, 0.15, n_sky), rng.uniform(0.01, 0.08, n_sky)])
    haze = rng.uniform(0.35, 0.75)
    skyline_colour = tuple(float(haze * s + (1 - haze) * b) for s, b in zip(sky_bottom, _building_colour(rng)))

    road_colour = _grey(rng, 55, 140, 5) if rng.random() < 0.85 else _jitter(rng, (135, 115, 100), 15)
    sidewalk_colour = _grey(rng, 100, 190, 6) if rng.random() < 0.7 else _jitter(rng, (165, 120, 105), 20)
    marking = _grey(rng, 190, 240, 3) if rng.random() < 0.8 else _jitter(rng, (220, 190, 60), 15)
    lane_xs = [x for x in np.arange(-road_l + 3.2, road_r - 1.5, 3.2)]
    crosswalk_z = float(rng.uniform(8, 40)) if rng.random() < 0.25 else None
    end_wall = (z_end, rng.uniform(8, 30), _building_colour(rng)) if rng.random() < 0.5 else None

    facades, hedges, trees = [], [], []
    for line in (line_l, line_r):
        z = rng.uniform(-15, 0)
        while z < z_end:
            seg = rng.uniform(8, 28)
            if rng.random() < 0.2:  # a gap: a hedge or nothing in front of the sky and the far ground
                if rng.random() < 0.6:
                    hedges.append(_Hedge(line, z, z + seg * 0.5, rng.uniform(0.7, 1.8), _green(rng)))
                z += seg * 0.5
                continue
            floor_h = rng.uniform(2.8, 3.6)
            height = floor_h * int(rng.integers(2, 8)) + rng.uniform(0.3, 1.5)
            win_step = rng.uniform(2.2, 4.0)
            n_floors, n_cols = int(height // floor_h), int(seg // win_step) + 1
            glass = rng.choice(["dark", "blue", "light"])
            base = {"dark": (45, 50, 60), "blue": (90, 130, 180), "light": (170, 180, 190)}[glass]
            win_colours = np.array([_jitter(rng, base, 20) for _ in range(3)])
            facades.append(_Facade(line, z, min(z + seg, z_end), height, _building_colour(rng), floor_h,
                                   win_step * rng.uniform(0.35, 0.6), floor_h * rng.uniform(0.4, 0.6), win_step,
                                   win_colours, rng.integers(0, 3, size=(n_floors, n_cols))))
            if rng.random() < 0.2:
                hedges.append(_Hedge(line - np.sign(line) * 0.6, z + 1, z + seg - 1, rng.uniform(0.6, 1.2), _green(rng)))
            z += seg
        if rng.random() < 0.7:  # a row of street trees near the curb
            x_tree = (road_l if line < 0 else road_r) * np.sign(line) + np.sign(line) * rng.uniform(0.6, 1.2)
            z = rng.uniform(2, 12)
            spacing = rng.uniform(7, 16)
            while z < z_end - 5:
                if rng.random() < 0.85:
                    trees.append(_make_tree(rng, x_tree + rng.uniform(-0.2, 0.2), z))
                z += spacing * rng.uniform(0.8, 1.2)

    cars = []
    for _ in range(int(rng.integers(1, 9)) + int(length / 12)):
        parked = rng.random() < 0.4
        if parked:
            side = -1 if rng.random() < 0.5 else 1
            x = side * ((road_l if side < 0 else road_r) - 1.1)
            oncoming, vz = False, 0.0
        else:
            lane = lane_xs + [-road_l + 1.6] if lane_xs else [-road_l + 1.6]
            x = float(rng.choice(np.array(lane) if len(lane) else np.array([0.0])))
            x = float(np.clip(x + rng.uniform(-0.3, 0.3), -road_l + 1.0, road_r - 1.0))
            oncoming = x < -1.6 and rng.random() < 0.7
            vz = rng.uniform(-1.4, -0.6) if oncoming else rng.uniform(0.4, 1.6)
        z = float(np.exp(rng.uniform(np.log(4.0), np.log(70.0)))) + rng.uniform(0, length)
        w = rng.uniform(1.65, 2.0)
        cars.append(_Car(x, z, vz, w, rng.uniform(1.35, 1.75), rng.uniform(3.8, 5.0), _car_colour(rng), oncoming))
    persons = []
    for _ in range(int(rng.integers(2, 13)) + int(length / 6)):
        side = -1 if rng.random() < 0.5 else 1
        road = road_l if side < 0 else road_r
        line = line_l if side < 0 else line_r
        x = side * rng.uniform(road + 0.4, abs(line) - 0.3) if rng.random() < 0.9 else rng.uniform(-road_l, road_r)
        z = float(np.exp(rng.uniform(np.log(3.0), np.log(30.0)))) + rng.uniform(0, length)
        height = rng.uniform(1.5, 1.95)
        persons.append(_Person(x, z, rng.uniform(-0.15, 0.15), height, height * rng.uniform(0.22, 0.28),
                               _jitter(rng, [(225, 185, 160), (190, 140, 100), (120, 80, 55)][rng.integers(3)], 12),
                               _grey(rng, 10, 90, 15), _cloth(rng), _cloth(rng), rng.uniform(0, 2 * np.pi)))

    gains = rng.uniform(0.85, 1.15, size=3)
    return _World(
        horizon=horizon, cx=rng.uniform(0.38, 0.62), focal=focal, road_l=road_l, road_r=road_r,
        line_l=line_l, line_r=line_r, sky_top=sky_top, sky_bottom=sky_bottom, clouds=clouds, skyline=skyline,
        skyline_colour=skyline_colour, road_colour=road_colour, marking_colour=marking, lane_xs=lane_xs,
        crosswalk_z=crosswalk_z, sidewalk_colour=sidewalk_colour, curb_colour=_grey(rng, 120, 210, 4),
        end_wall=end_wall, facades=facades, hedges=hedges, trees=trees, cars=cars, persons=persons,
        sun_side=-1 if rng.random() < 0.5 else 1, shadow_w=rng.uniform(0, 1) * (road_l + road_r) * 0.8,
        shade=rng.uniform(0.5, 0.8) if not overcast else rng.uniform(0.8, 0.95),
        gains=gains / gains.mean() * rng.uniform(0.75, 1.2), gamma=rng.uniform(0.8, 1.25),
        blur=rng.uniform(0.0, 1.3) if rng.random() < 0.7 else 0.0, noise=rng.uniform(1.0, 7.0),
        illum=rng.normal(size=(6, 10)).astype(np.float32),
        ego=(rng.uniform(0.06, 0.14), _car_colour(rng)) if rng.random() < 0.3 else None,
        speed=0.0,
    )


def _make_tree(rng: np.random.Generator, x: float, z: float) -> _Tree:
    n = int(rng.integers(4, 9))
    radius = rng.uniform(1.2, 2.8)
    blobs = np.column_stack([rng.uniform(-0.7, 0.7, n) * radius, rng.uniform(0.2, 1.4, n) * radius,
                             rng.uniform(-0.3, 0.3, n) * radius, rng.uniform(0.45, 0.8, n) * radius])
    base = np.array(_green(rng))
    colours = np.clip(base[None, :] * rng.uniform(0.75, 1.2, size=(n, 1)), 0, 255)
    return _Tree(x, z, rng.uniform(1.8, 3.5), _jitter(rng, (80, 65, 50), 15), blobs, colours)


# --------------------------------------------------------------------------- rendering


class _Canvas:
    """The image and the label map, always painted together so the label is exact."""

    def __init__(self, world: _World, h: int, w: int, cam_z: float) -> None:
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


def _ground_quad(c: _Canvas, x0: float, x1: float, z0: float, z1: float, y: float = 0.0) -> np.ndarray:
    return c.project([x0, x1, x1, x0], y, [z0, z0, z1, z1])


def _wall_quad(c: _Canvas, x: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    return c.project(x, [y0, y0, y1, y1], [z0, z1, z1, z0])


def _visible_z(c: _Canvas, z0: float, z1: float) -> Optional[tuple[float, float]]:
    z0, z1 = max(z0, c.cam_z + NEAR), min(z1, c.cam_z + FAR)
    return (z0, z1) if z1 > z0 else None


def _draw_sky(c: _Canvas, world: _World) -> None:
    rows = np.linspace(0.0, 1.0, c.h, dtype=np.float32)[:, None] / max(world.horizon, 1e-3)
    t = np.clip(rows, 0, 1)
    grad = (1 - t) * np.array(world.sky_top, np.float32) + t * np.array(world.sky_bottom, np.float32)
    c.image[:] = grad[:, None, :].astype(np.uint8)
    for x, y, rx, ry, bright in world.clouds:
        colour = [min(255.0, s + bright * (255 - s)) for s in world.sky_bottom]
        cv2.ellipse(c.image, (int(x * c.w), int(y * c.h)), (max(1, int(rx * c.w)), max(1, int(ry * c.h))), 0, 0, 360,
                    colour, -1)
    for x0, x1, hf in world.skyline:
        top = c.cy - hf * c.h
        c.fill([np.array([[x0 * c.w, top], [x1 * c.w, top], [x1 * c.w, c.cy + 1], [x0 * c.w, c.cy + 1]])],
               world.skyline_colour, BUILDING)


def _draw_ground(c: _Canvas, world: _World) -> None:
    far = c.cam_z + FAR
    near = c.cam_z + NEAR
    c.fill([np.array([[-1, c.cy], [c.w + 1, c.cy], [c.w + 1, c.h + 1], [-1, c.h + 1]])], world.sidewalk_colour, SIDEWALK)
    # Paving joints and the curb: texture only, still sidewalk.
    joint = tuple(v * 0.8 for v in world.sidewalk_colour)
    step = 1.5
    z = math.ceil(near / step) * step
    while z < c.cam_z + 40:
        for a, b in ((world.line_l - 30, -world.road_l), (world.road_r, world.line_r + 30)):
            p = c.project([a, b], 0, [z, z])
            cv2.line(c.image, tuple(int(v) for v in p[0]), tuple(int(v) for v in p[1]), joint, 1)
        z += step
    c.fill([_ground_quad(c, -world.road_l - 0.25, -world.road_l, near, far),
            _ground_quad(c, world.road_r, world.road_r + 0.25, near, far)], world.curb_colour, SIDEWALK)
    c.fill([_ground_quad(c, -world.road_l, world.road_r, near, far)], world.road_colour, ROAD)
    # Lane markings and a crosswalk: painted on the road, so labelled road.
    marks = []
    for x in world.lane_xs:
        z = math.ceil((near - 3) / 9.0) * 9.0
        while z < c.cam_z + 120:
            if z + 3 > near:
                marks.append(_ground_quad(c, x - 0.08, x + 0.08, max(z, near), z + 3))
            z += 9.0
    if world.crosswalk_z is not None and world.crosswalk_z > near:
        for i in range(int((world.road_l + world.road_r) / 1.0)):
            x0 = -world.road_l + i * 1.0 + 0.2
            marks.append(_ground_quad(c, x0, x0 + 0.5, world.crosswalk_z, world.crosswalk_z + 3))
    if marks:
        c.fill(marks, world.marking_colour, None)


def _draw_building_shadows(c: _Canvas, world: _World) -> None:
    if world.shadow_w <= 0.05:
        return
    quads = []
    for fac in world.facades:
        if np.sign(fac.x) != world.sun_side:
            continue
        vis = _visible_z(c, fac.z0, fac.z1)
        if vis is None:
            continue
        inner = fac.x - world.sun_side * world.shadow_w
        quads.append(_ground_quad(c, min(fac.x, inner), max(fac.x, inner), vis[0], vis[1]))
    if quads:
        c.darken(quads, world.shade)


def _draw_facades(c: _Canvas, world: _World) -> None:
    if world.end_wall is not None:
        z, height, colour = world.end_wall
        if z - c.cam_z > NEAR:
            c.fill([c.project([world.line_l - 50, world.line_r + 50, world.line_r + 50, world.line_l - 50],
                              [0, 0, height, height], z)], colour, BUILDING)
    for fac in world.facades:
        vis = _visible_z(c, fac.z0, fac.z1)
        if vis is None:
            continue
        # The facades on the sun's side face away from it.
        light = world.shade if np.sign(fac.x) == world.sun_side else 1.0
        colour = tuple(v * light for v in fac.colour)
        c.fill([_wall_quad(c, fac.x, 0, fac.height, vis[0], vis[1])], colour, BUILDING)
        edge = tuple(v * 0.7 for v in colour)
        c.fill([_wall_quad(c, fac.x, fac.height - 0.4, fac.height, vis[0], vis[1])], edge, None)
        if fac.z0 >= vis[0]:
            c.fill([_wall_quad(c, fac.x, 0, fac.height, fac.z0, fac.z0 + 0.3)], edge, None)
        _draw_windows(c, fac, vis, light)


def _draw_windows(c: _Canvas, fac: _Facade, vis: tuple[float, float], light: float) -> None:
    floors, cols = fac.win_shade.shape
    k = np.arange(floors)[:, None]
    j = np.arange(cols)[None, :]
    ground = k == 0  # shop windows: taller and wider
    y0 = k * fac.floor_h + np.where(ground, 0.3, 0.9)
    y1 = y0 + np.where(ground, fac.floor_h * 0.75, fac.win_h)
    z0 = fac.z0 + 0.6 + j * fac.win_step + 0 * k
    z1 = z0 + np.where(ground, fac.win_step * 0.8, fac.win_w)
    # Keep whole windows that are in view and at least a pixel wide.
    keep = (z0 >= vis[0]) & (z1 <= vis[1]) & (c.f * fac.win_w / np.maximum(z0 - c.cam_z, NEAR) >= 1.0)
    if not keep.any():
        return
    y0, y1 = np.broadcast_to(y0, keep.shape)[keep], np.broadcast_to(y1, keep.shape)[keep]
    z0, z1 = z0[keep], z1[keep]
    quads = c.project(fac.x, np.stack([y0, y0, y1, y1], 1), np.stack([z0, z1, z1, z0], 1))  # (n, 4, 2)
    shade = fac.win_shade[keep]
    for i in range(len(fac.win_colours)):
        sel = shade == i
        if sel.any():
            c.fill(quads[sel], tuple(v * light for v in fac.win_colours[i]), None)


def _draw_hedge(c: _Canvas, hedge: _Hedge) -> None:
    vis = _visible_z(c, hedge.z0, hedge.z1)
    if vis is not None:
        c.fill([_wall_quad(c, hedge.x, 0, hedge.height, vis[0], vis[1])], hedge.colour, VEGETATION)


def _draw_tree(c: _Canvas, tree: _Tree, z: float) -> None:
    trunk = c.project([tree.x - 0.15, tree.x + 0.15, tree.x + 0.15, tree.x - 0.15],
                      [0, 0, tree.trunk_h + 0.3, tree.trunk_h + 0.3], z)
    c.fill([trunk], tree.trunk_colour, VEGETATION)
    order = np.argsort(-tree.blobs[:, 2])  # far blobs first
    for i in order:
        dx, dy, dz, r = tree.blobs[i]
        centre = c.project(tree.x + dx, tree.trunk_h + dy, z + dz)[0]
        radius = c.f * r / max(z + dz - c.cam_z, NEAR)
        c.disc(centre, radius, tree.colours[i], VEGETATION, sides=20)
        # Darker leaf clumps inside the crown: texture only.
        c.disc(centre + radius * 0.3, radius * 0.35, tree.colours[i] * 0.75, None, sides=10)


def _car_profile(car: _Car) -> tuple[np.ndarray, np.ndarray]:
    """The car's cross-section (x, y) in metres around its centre line: body below, tapered cabin above."""
    w, h = car.w, car.h
    body = np.array([[-w / 2, 0.3], [w / 2, 0.3], [w / 2, 0.6 * h], [0.38 * w, h], [-0.38 * w, h], [-w / 2, 0.6 * h]])
    glass = np.array([[-0.44 * w, 0.64 * h], [0.44 * w, 0.64 * h], [0.35 * w, 0.94 * h], [-0.35 * w, 0.94 * h]])
    return body, glass


def _draw_car(c: _Canvas, car: _Car, z: float, shade: float) -> None:
    body, glass = _car_profile(car)
    near_pts = c.project(car.x + body[:, 0], body[:, 1], z)
    far_pts = c.project(car.x + body[:, 0], body[:, 1], z + car.length)
    # Shadow on the road under the car, then the extruded body's silhouette (sides and roof), then the visible end.
    c.darken([_ground_quad(c, car.x - car.w * 0.55, car.x + car.w * 0.55, z - 0.2, z + car.length)], shade * 0.7)
    hull = cv2.convexHull(np.concatenate([near_pts, far_pts]).astype(np.float32))[:, 0, :]
    c.fill([hull], tuple(v * 0.8 for v in car.colour), CAR)
    side = -1.0 if car.x > 0 else 1.0  # the side facing the camera's centre line
    tyre = (25, 25, 25)
    for dz in (0.18 * car.length, 0.82 * car.length):
        t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        wheel = c.project(car.x + side * car.w / 2, 0.33 + 0.33 * np.sin(t), z + dz + 0.33 * np.cos(t))
        c.fill([wheel], tyre, CAR)
    win = c.project(car.x + side * np.array([0.47, 0.47, 0.36, 0.36]) * car.w,
                    np.array([0.64, 0.64, 0.92, 0.92]) * car.h,
                    z + np.array([0.25, 0.8, 0.7, 0.35]) * car.length)
    c.fill([win], (40, 45, 55), None)
    for sx in (-1, 1):
        c.fill([c.project(car.x + sx * (car.w / 2 - 0.25) + np.array([-0.12, 0.12, 0.12, -0.12]),
                          [0, 0, 0.4, 0.4], z + 0.15)], tyre, CAR)
    c.fill([c.project(car.x + body[:, 0], body[:, 1], z)], car.colour, CAR)
    c.fill([c.project(car.x + glass[:, 0], glass[:, 1], z)], (35, 40, 50) if not car.oncoming else (60, 70, 85), None)
    lamp = (230, 230, 200) if car.oncoming else (200, 20, 20)
    for sx in (-1, 1):
        x0 = car.x + sx * (car.w / 2 - 0.08)
        c.fill([c.project([x0, x0 - sx * 0.3, x0 - sx * 0.3, x0], np.array([0.5, 0.5, 0.58, 0.58]) * car.h, z)],
               lamp, None)
    c.fill([c.project(car.x + np.array([-0.26, 0.26, 0.26, -0.26]), [0.38, 0.38, 0.5, 0.5], z)], (225, 225, 215), None)


def _draw_person(c: _Canvas, p: _Person, z: float, t: float, shade: float) -> None:
    h, w = p.height, p.width
    walking = abs(p.vz) > 0.02
    swing = 0.12 * h * math.sin(p.phase + (t * 0.6 if walking else 0.0))
    foot = c.project(p.x, 0, z)[0]
    s = c.f / max(z - c.cam_z, NEAR)  # pixels per metre at this depth

    def part(pts) -> np.ndarray:  # person-local metres (right, up) -> pixels
        pts = np.asarray(pts, float)
        return np.column_stack([foot[0] + pts[:, 0] * s, foot[1] - pts[:, 1] * s])

    c.darken([part([[-0.35 * h, -0.04 * h], [0.35 * h, -0.04 * h], [0.3 * h, 0.03 * h], [-0.3 * h, 0.03 * h]])],
             0.5 + 0.5 * shade)
    hip, shoulder, neck = 0.5 * h, 0.8 * h, 0.84 * h
    legs = [part([[-0.2 * w, hip], [0.05 * w, hip], [d + 0.05 * w, 0], [d - 0.18 * w, 0]]) for d in (swing * 0.5, -swing * 0.5)]
    arms = [part([[sx * 0.5 * w, shoulder], [sx * 0.5 * w + sx * 0.15 * w, shoulder],
                  [sx * 0.62 * w + d, hip - 0.02 * h], [sx * 0.45 * w + d, hip - 0.02 * h]])
            for sx, d in ((-1, -swing * 0.4), (1, swing * 0.4))]
    torso = part([[-0.5 * w, shoulder], [0.5 * w, shoulder], [0.42 * w, hip * 0.95], [-0.42 * w, hip * 0.95]])
    c.fill(legs, p.bottom, PERSON)
    c.fill([torso] + arms, p.top, PERSON)
    c.fill([part([[-0.08 * w, neck - 0.03 * h], [0.08 * w, neck - 0.03 * h], [0.08 * w, neck + 0.02 * h],
                  [-0.08 * w, neck + 0.02 * h]])], p.skin, PERSON)
    head_r = 0.065 * h
    head = np.array([foot[0], foot[1] - (h - head_r) * s])
    c.disc(head, head_r * s, p.skin, PERSON)
    c.disc(head - [0, head_r * s * 0.35], head_r * s * 0.8, p.hair, PERSON, sides=12)


def _draw_ego(c: _Canvas, ego: tuple) -> None:
    frac, colour = ego
    top = c.h * (1 - frac)
    t = np.linspace(0, np.pi, 24)
    arc = np.column_stack([c.w / 2 - np.cos(t) * c.w * 0.7, top + (1 - np.sin(t)) * frac * c.h * 0.6])
    pts = np.concatenate([arc, [[c.w * 1.2, c.h + 1], [-c.w * 0.2, c.h + 1]]])
    c.fill([pts], tuple(v * 0.6 for v in colour), EGO)


def _finish(c: _Canvas, world: _World, rng: np.random.Generator) -> np.ndarray:
    """Lighting, colour cast, blur and sensor noise: the image changes, the label does not."""
    illum = cv2.resize(world.illum, (c.w, c.h), interpolation=cv2.INTER_CUBIC)
    yy = np.linspace(-1, 1, c.h, dtype=np.float32)[:, None] ** 2
    xx = np.linspace(-1, 1, c.w, dtype=np.float32)[None, :] ** 2
    light = (1.0 + 0.08 * illum) * (1.0 - 0.12 * (xx + yy))  # uneven light and vignetting
    lit = c.image.astype(np.float32)
    lit *= light[:, :, None]
    lit *= world.gains.astype(np.float32)
    img = cv2.convertScaleAbs(lit)  # values are >= 0: this rounds and saturates to uint8
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** world.gamma + 0.5, 0, 255).astype(np.uint8)
    img = cv2.LUT(img, lut)
    if world.blur > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=max(world.blur * c.w / 512, 0.1))
    noise: np.ndarray = rng.standard_normal((c.h, c.w, 3), dtype=np.float32)
    noise *= world.noise
    return cv2.add(img, noise, dtype=cv2.CV_8U)  # saturating


def _render(world: _World, size: tuple[int, int], t: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    cam_z = world.speed * t
    c = _Canvas(world, h, w, cam_z)
    _draw_sky(c, world)
    _draw_ground(c, world)
    _draw_building_shadows(c, world)
    _draw_facades(c, world)
    for hedge in world.hedges:
        _draw_hedge(c, hedge)
    # Painter's order for everything standing on the street: farthest first.
    things = [(tree.z, 0, i) for i, tree in enumerate(world.trees)]
    things += [(car.z + car.vz * t, 1, i) for i, car in enumerate(world.cars)]
    things += [(p.z + p.vz * t, 2, i) for i, p in enumerate(world.persons)]
    for z, kind, i in sorted(things, key=lambda x: (-x[0], x[1], x[2])):
        depth = z - cam_z
        if depth < 2.0 or depth > 150.0:
            continue
        if kind == 0:
            _draw_tree(c, world.trees[i], z)
        elif kind == 1:
            _draw_car(c, world.cars[i], z, world.shade)
        else:
            _draw_person(c, world.persons[i], z, t, world.shade)
    if world.ego is not None:
        _draw_ego(c, world.ego)
    return _finish(c, world, rng), c.label


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ScasegError(f"the image size must be two integers H W, got {size!r}") from None
    if not (32 <= h <= 4096 and 32 <= w <= 8192):
        raise ScasegError(f"the image size must be between 32x32 and 4096x8192 (H W), got {h} {w}")
    return h, w


def render_scene(seed: int, size: Sequence[int] = (256, 512)) -> tuple[np.ndarray, np.ndarray]:
    """One random street scene: RGB uint8 (H, W, 3) and its uint8 label of Cityscapes train ids (255 = ego vehicle)."""
    h, w = _check_size(size)
    rng = np.random.default_rng(seed)
    world = _make_world(rng)
    return _render(world, (h, w), 0.0, rng)


def render_video(seed: int, frames: int, size: Sequence[int] = (256, 512)):
    """Yield (image, label) for ``frames`` frames of one street seen from a camera driving along it."""
    h, w = _check_size(size)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    speed = rng.uniform(0.5, 1.2)  # metres per frame: 18 to 43 km/h at 10 frames/s
    world = _make_world(rng, length=speed * frames)
    world.speed = speed
    for t in range(frames):
        yield _render(world, (h, w), float(t), np.random.default_rng(np.random.SeedSequence([seed, 2, t])))


# --------------------------------------------------------------------------- writing a dataset


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise ScasegError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(path))


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ScasegError(f"the output {out_dir} exists and is not a folder")
    # Replacing a folder is only safe when it is a previous output of this generator.
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "synth.json").is_file():
        raise ScasegError(f"the output folder {out_dir} is not empty and is not a scaseg-synth dataset; "
                          "choose a new folder")


def write_dataset(
    out_dir,
    num: int,
    seed: int = 0,
    size: Sequence[int] = (256, 512),
    val_fraction: float = 0.2,
    video_frames: int = 60,
    fps: float = 10.0,
    progress: bool = True,
) -> dict:
    """Write ``num`` scenes as a Cityscapes-layout dataset (train/val of city "synth") and a video; returns a summary.

    Layout: leftImg8bit/{train,val}/synth/synth_<i>_000019_leftImg8bit.png, gtFine/.../*_gtFine_labelTrainIds.png
    and *_gtFine_labelIds.png, video/synth.mp4 with video/labels/<frame>.png, and synth.json. The same arguments
    give the same bytes (PNG files; the mp4 depends on the OpenCV build). The folder appears only when complete.
    """
    from tqdm import tqdm

    h, w = _check_size(size)
    if int(num) < 1:
        raise ScasegError(f"the number of images must be at least 1, got {num}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ScasegError(f"the validation fraction must be in [0, 1), got {val_fraction}")
    if int(video_frames) < 0:
        raise ScasegError(f"the number of video frames must be 0 or more, got {video_frames}")
    if not fps > 0:
        raise ScasegError(f"the video frame rate must be positive, got {fps}")
    num, video_frames = int(num), int(video_frames)
    num_val = int(round(num * float(val_fraction)))
    if val_fraction > 0 and num >= 2:
        num_val = min(max(num_val, 1), num - 1)
    out_dir = Path(out_dir).expanduser()
    _check_out_dir(out_dir)
    start = time.perf_counter()
    counts = np.zeros(256, dtype=np.int64)
    with atomic_dir(out_dir) as tmp, tqdm(total=num + video_frames, desc="scaseg-synth", unit="img",
                                          disable=not progress, file=sys.stderr) as bar:
        for i in range(num):
            split = "train" if i < num - num_val else "val"
            image, label = render_scene(int(np.random.SeedSequence([seed, 0, i]).generate_state(1)[0]), (h, w))
            counts += np.bincount(label.ravel(), minlength=256)
            stem = f"{CITY}_{i:06d}_000019"
            _write_png(tmp / "leftImg8bit" / split / CITY / f"{stem}_leftImg8bit.png", image[:, :, ::-1])
            gt = tmp / "gtFine" / split / CITY
            _write_png(gt / f"{stem}_gtFine_labelTrainIds.png", label)
            _write_png(gt / f"{stem}_gtFine_labelIds.png", _TRAIN_TO_ID[label])
            bar.update(1)
        if video_frames:
            video = tmp / "video" / f"{CITY}.mp4"
            video.parent.mkdir(parents=True)
            writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (w, h))
            if not writer.isOpened():
                raise ScasegError("OpenCV cannot write an mp4v video on this machine (no MPEG-4 encoder)")
            try:
                for t, (image, label) in enumerate(render_video(seed, video_frames, (h, w))):
                    writer.write(np.ascontiguousarray(image[:, :, ::-1]))
                    _write_png(tmp / "video" / "labels" / f"{t:06d}.png", label)
                    bar.update(1)
            finally:
                writer.release()
        names = {v: k for k, v in SYNTH_CLASSES.items()}
        total = max(int(counts.sum()), 1)
        summary = {
            "generator": GENERATOR, "seed": int(seed), "size": [h, w], "num_train": num - num_val, "num_val": num_val,
            "video_frames": video_frames, "fps": float(fps), "city": CITY,
            "class_fraction": {names[k]: round(int(counts[k]) / total, 5) for k in sorted(names)},
            "ignored_fraction": round(int(counts[EGO]) / total, 5),
        }
        (tmp / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["out_dir"] = str(out_dir)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


# --------------------------------------------------------------------------- command line


def _build_app():
    import typer

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      help="Write synthetic street scenes with exact labels as a Cityscapes-layout dataset.")

    @app.command()
    def synth(
        out_dir: Path = typer.Argument(..., help="Output folder (created; replaced only if it is a previous output)."),
        num: int = typer.Option(100, "--num", "-n", help="Number of images (train + val)."),
        seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same files."),
        size: tuple[int, int] = typer.Option((256, 512), "--size", metavar="H W", help="Image height and width."),
        val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of the images in the val split."),
        video_frames: int = typer.Option(60, "--video-frames", help="Frames of video/synth.mp4 (0: no video)."),
        fps: float = typer.Option(10.0, "--fps", help="Frame rate of the video."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        version: bool = version_option("scaseg-synth"),
    ) -> None:
        s = write_dataset(out_dir, num, seed=seed, size=size, val_fraction=val_fraction, video_frames=video_frames,
                          fps=fps, progress=not quiet)
        print(f"wrote {s['num_train']} train + {s['num_val']} val images ({s['size'][0]}x{s['size'][1]})"
              f"{' and a ' + str(s['video_frames']) + '-frame video' if s['video_frames'] else ''} "
              f"to {s['out_dir']} in {s['seconds']:.1f} s")

    return app


def main() -> None:
    """Console entry point ``scaseg-synth``."""
    run_cli(_build_app(), prog="scaseg-synth")
