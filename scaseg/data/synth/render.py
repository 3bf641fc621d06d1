"""Painting a scene: sky, ground, facades, trees, cars and people in painter's order, then the camera's finish.

The image gets what the label does not see: shadows, textures, lane markings, window panes, lighting and colour
casts, blur and sensor noise.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from scaseg.data.synth.canvas import FAR, NEAR, Canvas, ground_quad, visible_z, wall_quad
from scaseg.data.synth.world import (BUILDING, CAR, EGO, PERSON, ROAD, SIDEWALK, VEGETATION, Car, Facade, Hedge,
                                     Person, Tree, World, make_world)
from scaseg.errors import ScasegError


def _draw_sky(c: Canvas, world: World) -> None:
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


def _draw_ground(c: Canvas, world: World) -> None:
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
    c.fill([ground_quad(c, -world.road_l - 0.25, -world.road_l, near, far),
            ground_quad(c, world.road_r, world.road_r + 0.25, near, far)], world.curb_colour, SIDEWALK)
    c.fill([ground_quad(c, -world.road_l, world.road_r, near, far)], world.road_colour, ROAD)
    # Lane markings and a crosswalk: painted on the road, so labelled road.
    marks = []
    for x in world.lane_xs:
        z = math.ceil((near - 3) / 9.0) * 9.0
        while z < c.cam_z + 120:
            if z + 3 > near:
                marks.append(ground_quad(c, x - 0.08, x + 0.08, max(z, near), z + 3))
            z += 9.0
    if world.crosswalk_z is not None and world.crosswalk_z > near:
        for i in range(int((world.road_l + world.road_r) / 1.0)):
            x0 = -world.road_l + i * 1.0 + 0.2
            marks.append(ground_quad(c, x0, x0 + 0.5, world.crosswalk_z, world.crosswalk_z + 3))
    if marks:
        c.fill(marks, world.marking_colour, None)


def _draw_building_shadows(c: Canvas, world: World) -> None:
    if world.shadow_w <= 0.05:
        return
    quads = []
    for fac in world.facades:
        if np.sign(fac.x) != world.sun_side:
            continue
        vis = visible_z(c, fac.z0, fac.z1)
        if vis is None:
            continue
        inner = fac.x - world.sun_side * world.shadow_w
        quads.append(ground_quad(c, min(fac.x, inner), max(fac.x, inner), vis[0], vis[1]))
    if quads:
        c.darken(quads, world.shade)


def _draw_facades(c: Canvas, world: World) -> None:
    if world.end_wall is not None:
        z, height, colour = world.end_wall
        if z - c.cam_z > NEAR:
            c.fill([c.project([world.line_l - 50, world.line_r + 50, world.line_r + 50, world.line_l - 50],
                              [0, 0, height, height], z)], colour, BUILDING)
    for fac in world.facades:
        vis = visible_z(c, fac.z0, fac.z1)
        if vis is None:
            continue
        # The facades on the sun's side face away from it.
        light = world.shade if np.sign(fac.x) == world.sun_side else 1.0
        colour = tuple(v * light for v in fac.colour)
        c.fill([wall_quad(c, fac.x, 0, fac.height, vis[0], vis[1])], colour, BUILDING)
        edge = tuple(v * 0.7 for v in colour)
        c.fill([wall_quad(c, fac.x, fac.height - 0.4, fac.height, vis[0], vis[1])], edge, None)
        if fac.z0 >= vis[0]:
            c.fill([wall_quad(c, fac.x, 0, fac.height, fac.z0, fac.z0 + 0.3)], edge, None)
        _draw_windows(c, fac, vis, light)


def _draw_windows(c: Canvas, fac: Facade, vis: tuple[float, float], light: float) -> None:
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


def _draw_hedge(c: Canvas, hedge: Hedge) -> None:
    vis = visible_z(c, hedge.z0, hedge.z1)
    if vis is not None:
        c.fill([wall_quad(c, hedge.x, 0, hedge.height, vis[0], vis[1])], hedge.colour, VEGETATION)


def _draw_tree(c: Canvas, tree: Tree, z: float) -> None:
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


def _car_profile(car: Car) -> tuple[np.ndarray, np.ndarray]:
    """The car's cross-section (x, y) in metres around its centre line: body below, tapered cabin above."""
    w, h = car.w, car.h
    body = np.array([[-w / 2, 0.3], [w / 2, 0.3], [w / 2, 0.6 * h], [0.38 * w, h], [-0.38 * w, h], [-w / 2, 0.6 * h]])
    glass = np.array([[-0.44 * w, 0.64 * h], [0.44 * w, 0.64 * h], [0.35 * w, 0.94 * h], [-0.35 * w, 0.94 * h]])
    return body, glass


def _draw_car(c: Canvas, car: Car, z: float, shade: float) -> None:
    body, glass = _car_profile(car)
    near_pts = c.project(car.x + body[:, 0], body[:, 1], z)
    far_pts = c.project(car.x + body[:, 0], body[:, 1], z + car.length)
    # Shadow on the road under the car, then the extruded body's silhouette (sides and roof), then the visible end.
    c.darken([ground_quad(c, car.x - car.w * 0.55, car.x + car.w * 0.55, z - 0.2, z + car.length)], shade * 0.7)
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


def _draw_person(c: Canvas, p: Person, z: float, t: float, shade: float) -> None:
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


def _draw_ego(c: Canvas, ego: tuple) -> None:
    frac, colour = ego
    top = c.h * (1 - frac)
    t = np.linspace(0, np.pi, 24)
    arc = np.column_stack([c.w / 2 - np.cos(t) * c.w * 0.7, top + (1 - np.sin(t)) * frac * c.h * 0.6])
    pts = np.concatenate([arc, [[c.w * 1.2, c.h + 1], [-c.w * 0.2, c.h + 1]]])
    c.fill([pts], tuple(v * 0.6 for v in colour), EGO)


def _finish(c: Canvas, world: World, rng: np.random.Generator) -> np.ndarray:
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


def render(world: World, size: tuple[int, int], t: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    cam_z = world.speed * t
    c = Canvas(world, h, w, cam_z)
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


def check_size(size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ScasegError(f"the image size must be two integers H W, got {size!r}") from None
    if not (32 <= h <= 4096 and 32 <= w <= 8192):
        raise ScasegError(f"the image size must be between 32x32 and 4096x8192 (H W), got {h} {w}")
    return h, w


def render_scene(seed: int, size: Sequence[int] = (256, 512)) -> tuple[np.ndarray, np.ndarray]:
    """One random street scene: RGB uint8 (H, W, 3) and its uint8 label of Cityscapes train ids (255 = ego vehicle)."""
    h, w = check_size(size)
    rng = np.random.default_rng(seed)
    world = make_world(rng)
    return render(world, (h, w), 0.0, rng)


def render_video(seed: int, frames: int, size: Sequence[int] = (256, 512)):
    """Yield (image, label) for ``frames`` frames of one street seen from a camera driving along it."""
    h, w = check_size(size)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    speed = rng.uniform(0.5, 1.2)  # metres per frame: 18 to 43 km/h at 10 frames/s
    world = make_world(rng, length=speed * frames)
    world.speed = speed
    for t in range(frames):
        yield render(world, (h, w), float(t), np.random.default_rng(np.random.SeedSequence([seed, 2, t])))
