"""scaseg.data.synth.world: the random street make_world draws (geometry and colours only, nothing painted)."""
from __future__ import annotations

import numpy as np
import pytest

from scaseg.data.synth import world as synth_world
from scaseg.data.synth.world import CAR, EGO, SKY, SYNTH_CLASSES, make_world


def _world(seed: int, length: float = 0.0) -> synth_world.World:
    return make_world(np.random.default_rng(seed), length)


def test_same_generator_state_draws_the_same_street_and_another_seed_another() -> None:
    a, b, c = _world(3), _world(3), _world(4)
    assert (a.horizon, a.focal, a.road_l, a.road_r, len(a.facades), len(a.cars)) == \
        (b.horizon, b.focal, b.road_l, b.road_r, len(b.facades), len(b.cars))
    np.testing.assert_array_equal(a.illum, b.illum)
    assert (a.horizon, a.road_l) != (c.horizon, c.road_l)


@pytest.mark.parametrize("seed", range(6))
def test_street_geometry_is_consistent(seed: int) -> None:
    w = _world(seed)
    assert 0.36 <= w.horizon <= 0.5 and 0.38 <= w.cx <= 0.62 and w.speed == 0.0
    # Sidewalks lie between the road's edges and the building lines on both sides.
    assert w.line_l < -w.road_l < 0 < w.road_r < w.line_r
    assert all(f.x in (w.line_l, w.line_r) and f.z0 < f.z1 and f.height > 0 for f in w.facades)
    assert all(h.z0 < h.z1 for h in w.hedges)
    # Moving cars stay on the road; parked ones by the curb (their centre 1.1 m inside it).
    assert all(-w.road_l <= car.x <= w.road_r for car in w.cars)
    assert all((car.vz < 0) == car.oncoming for car in w.cars)
    # Trees stand on the sidewalk side of the curb, never on the road.
    assert all(t.x < -w.road_l or t.x > w.road_r for t in w.trees)
    assert w.gains.shape == (3,) and w.illum.shape == (6, 10)
    assert w.ego is None or 0.06 <= w.ego[0] <= 0.14


def test_a_video_street_reaches_past_the_camera_travel_and_holds_more_traffic() -> None:
    length = 300.0
    still, long = _world(5), _world(5, length)
    assert max(f.z1 for f in long.facades) > length
    assert long.end_wall is None or long.end_wall[0] > length
    assert len(long.cars) >= int(length / 12) and len(long.persons) >= int(length / 6)
    assert len(long.cars) > len(still.cars)


def test_class_ids_are_the_cityscapes_train_ids() -> None:
    assert (SYNTH_CLASSES["sky"], SYNTH_CLASSES["car"], EGO) == (SKY, CAR, 255) == (10, 13, 255)
    assert len(set(SYNTH_CLASSES.values())) == len(SYNTH_CLASSES)


def test_a_named_pick_is_numpys_choice_over_the_names() -> None:
    names, p = ["concrete", "sand", "brick", "white"], [0.4, 0.3, 0.2, 0.1]
    ours, theirs = np.random.default_rng(5), np.random.default_rng(5)
    assert [synth_world._pick(ours, names, p) for _ in range(200)] == [str(theirs.choice(names, p=p)) for _ in range(200)]
    assert [synth_world._pick(ours, names) for _ in range(50)] == [str(theirs.choice(names)) for _ in range(50)]


def test_a_ctrl_c_while_colours_are_drawn_reaches_the_caller() -> None:
    """A stop signal raises KeyboardInterrupt wherever the main thread is (scaseg.signals); NumPy's choice over
    strings, which the colour draws used, lost it every time, and scaseg-synth then ran to the end."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, stop)
    rng, delays = np.random.default_rng(0), np.random.default_rng(1).uniform(0.001, 0.004, 20)
    reached = 0
    try:
        for delay in delays:
            try:
                signal.setitimer(signal.ITIMER_REAL, float(delay))
                for _ in range(20000):  # a second or more of colour draws: the signal falls inside them
                    synth_world._building_colour(rng), synth_world._car_colour(rng), synth_world._green(rng)
            except KeyboardInterrupt:
                reached += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert reached == len(delays)
