"""The scene model: a random straight street (geometry, colours, lighting) drawn from one random generator.

Nothing here draws: ``make_world`` returns the plain data that ``render.py`` paints. The classes are the real
Cityscapes train ids, so the cityscapes reader opens the output with the 19 official classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, PERSON, CAR = 0, 1, 2, 8, 10, 11, 13
EGO = 255  # the camera car's bonnet: Cityscapes "ego vehicle", ignored in training and evaluation
SYNTH_CLASSES = {"road": ROAD, "sidewalk": SIDEWALK, "building": BUILDING, "vegetation": VEGETATION,
                 "sky": SKY, "person": PERSON, "car": CAR}



@dataclass
class Facade:
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
class Car:
    x: float
    z: float  # the visible end's depth (rear for same-direction cars, front for oncoming ones)
    vz: float  # metres per video frame
    w: float
    h: float
    length: float
    colour: tuple
    oncoming: bool


@dataclass
class Person:
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
class Tree:
    x: float
    z: float
    trunk_h: float
    trunk_colour: tuple
    blobs: np.ndarray  # (n, 4): dx, dy, dz, radius in metres, relative to the trunk top
    colours: np.ndarray  # (n, 3)


@dataclass
class Hedge:
    x: float
    z0: float
    z1: float
    height: float
    colour: tuple


@dataclass
class World:
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


def _pick(rng: np.random.Generator, names: Sequence[str], p: Optional[Sequence[float]] = None) -> str:
    """One of ``names`` (with probabilities ``p``): the same draw as ``rng.choice(names, p=p)``, which returns the
    name at the index ``rng.choice(len(names), p=p)`` picks. Not that call itself: NumPy's choice over an array of
    strings loses a KeyboardInterrupt raised while it runs (NumPy 2.4), so a Ctrl-C that fell there let scaseg-synth
    run to the end (with it, 7 of 20 signals sent during colour draws were lost: tests/core/data/test_synth_world.py)."""
    return names[int(rng.choice(len(names), p=p))]


def _building_colour(rng: np.random.Generator) -> tuple:
    family = _pick(rng, ["concrete", "sand", "brick", "white", "pastel", "dark"], p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.1])
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
    kind = _pick(rng, ["green", "dark", "olive", "autumn"], p=[0.45, 0.25, 0.2, 0.1])
    base = {"green": (70, 120, 40), "dark": (40, 70, 35), "olive": (105, 110, 70), "autumn": (150, 105, 45)}[kind]
    return _jitter(rng, base, 20)


def _car_colour(rng: np.random.Generator) -> tuple:
    kind = _pick(rng, ["grey", "white", "black", "red", "blue", "green", "beige"], p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05])
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


def make_world(rng: np.random.Generator, length: float = 0.0) -> World:
    """Draw a random street; ``length`` metres of camera travel (video) extend it ahead."""
    horizon = rng.uniform(0.36, 0.5)
    focal = rng.uniform(0.55, 0.9)
    road_l, road_r = rng.uniform(2.5, 7.0), rng.uniform(2.0, 8.0)
    line_l, line_r = -(road_l + rng.uniform(2.0, 6.0)), road_r + rng.uniform(2.0, 6.0)
    z_end = length + rng.uniform(60, 220)
    overcast, sky_top, sky_bottom, clouds, skyline, skyline_colour = _draw_sky(rng, horizon)

    road_colour = _grey(rng, 55, 140, 5) if rng.random() < 0.85 else _jitter(rng, (135, 115, 100), 15)
    sidewalk_colour = _grey(rng, 100, 190, 6) if rng.random() < 0.7 else _jitter(rng, (165, 120, 105), 20)
    marking = _grey(rng, 190, 240, 3) if rng.random() < 0.8 else _jitter(rng, (220, 190, 60), 15)
    lane_xs = [x for x in np.arange(-road_l + 3.2, road_r - 1.5, 3.2)]
    crosswalk_z = float(rng.uniform(8, 40)) if rng.random() < 0.25 else None
    end_wall = (z_end, rng.uniform(8, 30), _building_colour(rng)) if rng.random() < 0.5 else None

    facades: list[Facade] = []
    hedges: list[Hedge] = []
    trees: list[Tree] = []
    for line in (line_l, line_r):
        _draw_buildings(rng, line, z_end, facades, hedges)
        if rng.random() < 0.7:  # a row of street trees near the curb
            trees += _draw_tree_row(rng, line, road_l, road_r, z_end)
    cars = _draw_cars(rng, length, road_l, road_r, lane_xs)
    persons = _draw_persons(rng, length, road_l, road_r, line_l, line_r, focal)

    gains = rng.uniform(0.85, 1.15, size=3)
    return World(
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


def _draw_sky(rng: np.random.Generator, horizon: float) -> tuple[bool, tuple, tuple, np.ndarray, np.ndarray, tuple]:
    """Overcast or not, the sky's gradient, clouds, and the hazy skyline (blocks and their colour)."""
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
    return overcast, sky_top, sky_bottom, clouds, skyline, skyline_colour


def _draw_buildings(rng: np.random.Generator, line: float, z_end: float, facades: list[Facade],
                    hedges: list[Hedge]) -> None:
    """Facades along the building line at x = ``line`` up to ``z_end``, with gaps, and hedges in gaps and before
    some facades (appended to ``facades`` and ``hedges``: both kinds are drawn in one walk down the street)."""
    z = rng.uniform(-15, 0)
    while z < z_end:
        seg = rng.uniform(8, 28)
        if rng.random() < 0.2:  # a gap: a hedge or nothing in front of the sky and the far ground
            if rng.random() < 0.6:
                hedges.append(Hedge(line, z, z + seg * 0.5, rng.uniform(0.7, 1.8), _green(rng)))
            z += seg * 0.5
            continue
        floor_h = rng.uniform(2.8, 3.6)
        height = floor_h * int(rng.integers(2, 8)) + rng.uniform(0.3, 1.5)
        win_step = rng.uniform(2.2, 4.0)
        n_floors, n_cols = int(height // floor_h), int(seg // win_step) + 1
        glass = _pick(rng, ["dark", "blue", "light"])
        base = {"dark": (45, 50, 60), "blue": (90, 130, 180), "light": (170, 180, 190)}[glass]
        win_colours = np.array([_jitter(rng, base, 20) for _ in range(3)])
        facades.append(Facade(line, z, min(z + seg, z_end), height, _building_colour(rng), floor_h,
                               win_step * rng.uniform(0.35, 0.6), floor_h * rng.uniform(0.4, 0.6), win_step,
                               win_colours, rng.integers(0, 3, size=(n_floors, n_cols))))
        if rng.random() < 0.2:
            hedges.append(Hedge(line - np.sign(line) * 0.6, z + 1, z + seg - 1, rng.uniform(0.6, 1.2), _green(rng)))
        z += seg


def _draw_tree_row(rng: np.random.Generator, line: float, road_l: float, road_r: float, z_end: float) -> list[Tree]:
    """Street trees near the curb on the side of the building line ``line``."""
    trees = []
    x_tree = (road_l if line < 0 else road_r) * np.sign(line) + np.sign(line) * rng.uniform(0.6, 1.2)
    z = rng.uniform(2, 12)
    spacing = rng.uniform(7, 16)
    while z < z_end - 5:
        if rng.random() < 0.85:
            trees.append(_make_tree(rng, x_tree + rng.uniform(-0.2, 0.2), z))
        z += spacing * rng.uniform(0.8, 1.2)
    return trees


def _draw_cars(rng: np.random.Generator, length: float, road_l: float, road_r: float, lane_xs: list) -> list[Car]:
    """Parked cars by the curbs and moving ones in the lanes (more for a longer video)."""
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
        cars.append(Car(x, z, vz, w, rng.uniform(1.35, 1.75), rng.uniform(3.8, 5.0), _car_colour(rng), oncoming))
    return cars


def _draw_persons(rng: np.random.Generator, length: float, road_l: float, road_r: float, line_l: float,
                  line_r: float, focal: float) -> list[Person]:
    """People, mostly on the sidewalks and near the camera (more for a longer video)."""
    persons = []
    for k in range(int(rng.integers(2, 13)) + int(length / 6)):
        side = -1 if rng.random() < 0.5 else 1
        road = road_l if side < 0 else road_r
        line = line_l if side < 0 else line_r
        x = side * rng.uniform(road + 0.4, abs(line) - 0.3) if rng.random() < 0.9 else rng.uniform(-road_l, road_r)
        # Most people near the camera (4-16 m, and far enough to be in view: tens of pixels tall), the rest spread
        # down the street.
        near = k < 6 or rng.random() < 0.5
        z = max(float(np.exp(rng.uniform(np.log(4.0), np.log(16.0)))), abs(x) * focal / 0.42) if near else (
            float(np.exp(rng.uniform(np.log(3.0), np.log(30.0)))) + rng.uniform(0, length))
        height = rng.uniform(1.5, 1.95)
        persons.append(Person(x, z, rng.uniform(-0.15, 0.15), height, height * rng.uniform(0.22, 0.28),
                               _jitter(rng, [(225, 185, 160), (190, 140, 100), (120, 80, 55)][rng.integers(3)], 12),
                               _grey(rng, 10, 90, 15), _cloth(rng), _cloth(rng), rng.uniform(0, 2 * np.pi)))
    return persons


def _make_tree(rng: np.random.Generator, x: float, z: float) -> Tree:
    n = int(rng.integers(4, 9))
    radius = rng.uniform(1.2, 2.8)
    blobs = np.column_stack([rng.uniform(-0.7, 0.7, n) * radius, rng.uniform(0.2, 1.4, n) * radius,
                             rng.uniform(-0.3, 0.3, n) * radius, rng.uniform(0.45, 0.8, n) * radius])
    base = np.array(_green(rng))
    colours = np.clip(base[None, :] * rng.uniform(0.75, 1.2, size=(n, 1)), 0, 255)
    return Tree(x, z, rng.uniform(1.8, 3.5), _jitter(rng, (80, 65, 50), 15), blobs, colours)
