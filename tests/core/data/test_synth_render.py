"""scaseg.data.synth.render: the size check, a scene and a video (render_scene's determinism: test_synth.py)."""
from __future__ import annotations

import numpy as np
import pytest

from scaseg.data.synth.render import check_size, render_video
from scaseg.errors import ScasegError


@pytest.mark.parametrize("size, message", [
    ((31, 64), "between 32x32 and 4096x8192"), ((64, 8193), "between 32x32 and 4096x8192"),
    ((4097, 64), "between"), ((64,), "two integers"), (("a", "b"), "two integers"), (None, "two integers"),
])
def test_check_size_refuses_in_one_sentence(size, message) -> None:
    with pytest.raises(ScasegError, match=message):
        check_size(size)


def test_check_size_accepts_the_bounds_and_numeric_strings() -> None:
    assert check_size((32, 32)) == (32, 32) and check_size(["4096", 8192]) == (4096, 8192)


def test_video_frames_move_forward_and_repeat_with_the_seed() -> None:
    frames = list(render_video(2, 3, (48, 96)))
    assert len(frames) == 3 and all(im.shape == (48, 96, 3) and lab.shape == (48, 96) for im, lab in frames)
    assert not np.array_equal(frames[0][1], frames[2][1])  # the camera drove on: the labels changed
    again = list(render_video(2, 3, (48, 96)))
    for (a, la), (b, lb) in zip(frames, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    with pytest.raises(ScasegError):
        next(render_video(2, 1, (8, 8)))
