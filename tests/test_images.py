"""scaseg.data.images: decoding any image file to RGB uint8, and errors that name the file."""
from __future__ import annotations

import numpy as np
import pytest

from scaseg.data.images import read_image, to_rgb_uint8
from scaseg.errors import ScasegError


def test_to_rgb_handles_gray_rgba_16bit_float_and_bgr():
    gray = np.full((4, 5), 200, np.uint8)
    assert to_rgb_uint8(gray).shape == (4, 5, 3)
    assert (to_rgb_uint8(gray[:, :, None]) == 200).all()
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 255
    assert to_rgb_uint8(rgba)[0, 0].tolist() == [255, 0, 0]
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    assert to_rgb_uint8(bgr, bgr=True)[0, 0].tolist() == [0, 0, 255]
    deep = np.full((2, 2, 3), 65535, np.uint16)
    assert (to_rgb_uint8(deep) == 255).all()
    assert (to_rgb_uint8(np.full((2, 2, 3), 0.5, np.float32)) == 128).all()
    with pytest.raises(ScasegError):
        to_rgb_uint8(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ScasegError):
        to_rgb_uint8(np.zeros((0, 3, 3), np.uint8))


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(ScasegError, match="not found"):
        read_image(str(tmp_path / "missing.png"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ScasegError, match="bad.png"):
        read_image(str(bad))
