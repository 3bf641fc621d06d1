"""scaseg.metadata: the model metadata round trip, its validation, the default palette."""
from __future__ import annotations

import pytest

from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo, default_palette


def test_model_info_round_trip_and_validation():
    info = ModelInfo(variant="scaseg-t", num_classes=3, input_size=(64, 128), extra={"opset": 17})
    again = ModelInfo.from_json(info.to_json())
    assert again == info
    assert again.palette == default_palette(3)
    with pytest.raises(ScasegError):
        ModelInfo(variant="x", num_classes=2, class_names=["a"])
    with pytest.raises(ScasegError):
        ModelInfo.from_json('{"num_classes": 2}')
    with pytest.raises(ScasegError):
        ModelInfo.from_json("{not json")


def test_default_palette_is_distinct():
    pal = default_palette(150)
    assert len(set(pal)) == 150 and pal[0] == (0, 0, 0)
