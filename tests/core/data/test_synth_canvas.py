"""scaseg.data.synth.canvas: the pinhole camera and the raster that paints image and label together."""
from __future__ import annotations

import numpy as np
import pytest

from scaseg.data.synth.canvas import CAM_HEIGHT, FAR, NEAR, Canvas, ground_quad, visible_z, wall_quad
from scaseg.data.synth.world import CAR, ROAD, SKY, make_world


@pytest.fixture
def canvas() -> Canvas:
    return Canvas(make_world(np.random.default_rng(0)), 64, 128, cam_z=0.0)


def test_a_new_canvas_is_black_and_all_sky(canvas: Canvas) -> None:
    assert canvas.image.shape == (64, 128, 3) and canvas.label.shape == (64, 128)
    assert not canvas.image.any() and (canvas.label == SKY).all()


def test_projection_follows_the_pinhole_model(canvas: Canvas) -> None:
    # A point at camera height lies on the horizon; the road below it; farther points approach the horizon.
    horizon = canvas.project(0.0, CAM_HEIGHT, 10.0)[0]
    assert horizon == pytest.approx([canvas.cx, canvas.cy])
    near, far = canvas.project(1.0, 0.0, [5.0, 50.0])
    assert near[1] > far[1] > canvas.cy and near[0] > far[0] > canvas.cx
    assert near[1] - canvas.cy == pytest.approx(canvas.f * CAM_HEIGHT / 5.0)


def test_points_behind_the_camera_are_clipped_to_the_near_plane_and_bounded(canvas: Canvas) -> None:
    behind, at_near = canvas.project(0.5, 0.0, [-10.0, NEAR])
    np.testing.assert_allclose(behind, at_near)
    huge = Canvas(make_world(np.random.default_rng(0)), 64, 128, cam_z=0.0).project(1e9, -1e9, 1.0)[0]
    assert np.all(np.abs(huge) <= 1e5)  # fixed point still fits int32


def test_fill_paints_image_and_label_with_the_same_pixels(canvas: Canvas) -> None:
    canvas.fill([np.array([[10.0, 10.0], [60.0, 10.0], [60.0, 40.0], [10.0, 40.0]])], (200, 100, 50), CAR)
    painted = canvas.image.any(axis=2)
    assert painted.sum() > 1000
    np.testing.assert_array_equal(painted, canvas.label == CAR)
    canvas.fill(np.array([[[70.0, 10.0], [90.0, 10.0], [90.0, 30.0]]]), (255, 255, 255), None)  # image only
    assert (canvas.label == CAR).sum() == painted.sum()
    assert canvas.image[15, 85].tolist() == [255, 255, 255]


def test_darken_touches_only_the_image_and_ignores_polygons_outside(canvas: Canvas) -> None:
    canvas.image[:] = 200
    canvas.darken([np.array([[0.0, 0.0], [20.0, 0.0], [20.0, 20.0], [0.0, 20.0]])], 0.5)
    assert canvas.image[5, 5].tolist() == [100, 100, 100] and canvas.image[50, 100].tolist() == [200, 200, 200]
    canvas.darken([np.array([[500.0, 500.0], [600.0, 500.0], [600.0, 600.0]])], 0.0)  # off the canvas: no-op
    assert (canvas.label == SKY).all() and (canvas.image >= 100).all()


def test_disc_and_quads(canvas: Canvas) -> None:
    canvas.disc((64.0, 32.0), 8.0, (10, 20, 30), ROAD)
    assert (canvas.label == ROAD).sum() == pytest.approx(np.pi * 64, rel=0.2)
    assert ground_quad(canvas, -1, 1, 5, 10).shape == (4, 2) and wall_quad(canvas, 3, 0, 5, 5, 10).shape == (4, 2)


def test_visible_z_clips_to_near_and_far_and_says_none_when_nothing_is_left(canvas: Canvas) -> None:
    assert visible_z(canvas, -5.0, 10.0) == (NEAR, 10.0)
    assert visible_z(canvas, 10.0, 1e6) == (10.0, FAR)
    assert visible_z(canvas, -5.0, 0.2) is None
