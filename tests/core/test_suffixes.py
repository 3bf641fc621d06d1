"""scaseg.suffixes: the one table of file suffixes, checked for consistency and against what OpenCV really writes."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from scaseg import suffixes as s

TABLES = {"image": s.IMAGE_SUFFIXES, "label": s.LABEL_SUFFIXES, "label output": s.LABEL_OUTPUT_SUFFIXES,
          "video": s.VIDEO_SUFFIXES, "video output": s.VIDEO_OUTPUT_SUFFIXES, "onnx": s.ONNX_SUFFIXES,
          "engine": s.ENGINE_SUFFIXES, "checkpoint": s.CHECKPOINT_SUFFIXES}


@pytest.mark.parametrize("name", TABLES)
def test_every_suffix_is_a_lower_case_dotted_word_listed_once(name: str) -> None:
    table = TABLES[name]
    assert table and len(set(table)) == len(table)
    assert all(x.startswith(".") and x == x.lower() and x[1:].isalnum() for x in table)


def test_the_kinds_a_path_is_sorted_by_do_not_overlap() -> None:
    kinds = ("image", "video", "onnx", "engine", "checkpoint")
    for a, b in itertools.combinations(kinds, 2):
        assert not set(TABLES[a]) & set(TABLES[b]), (a, b)


def test_outputs_are_among_the_inputs_and_the_written_suffixes_in_their_tables() -> None:
    assert set(s.LABEL_SUFFIXES) <= set(s.IMAGE_SUFFIXES) and not {".jpg", ".jpeg", ".webp"} & set(s.LABEL_SUFFIXES)
    assert set(s.LABEL_OUTPUT_SUFFIXES) <= set(s.LABEL_SUFFIXES)
    assert set(s.VIDEO_OUTPUT_SUFFIXES) <= set(s.VIDEO_SUFFIXES)
    assert s.ONNX_SUFFIX in s.ONNX_SUFFIXES and s.ENGINE_SUFFIX in s.ENGINE_SUFFIXES
    assert all(fmt and codec for fmt, codec in s.VIDEO_CONTAINERS.values())


@pytest.mark.parametrize("suffix", s.LABEL_SUFFIXES)
def test_label_formats_are_lossless_and_outputs_hold_16_bit_ids(suffix: str) -> None:
    labels8 = np.arange(64 * 32, dtype=np.uint32).reshape(32, 64).astype(np.uint8)
    ok, data = cv2.imencode(suffix, labels8)
    assert ok and np.array_equal(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), labels8)
    labels16 = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 31).astype(np.uint16)
    ok, data = cv2.imencode(suffix, labels16)
    kept = ok and np.array_equal(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), labels16)
    assert kept == (suffix in s.LABEL_OUTPUT_SUFFIXES)  # BMP cannot hold them: not an output


@pytest.mark.parametrize("suffix", s.VIDEO_OUTPUT_SUFFIXES)
def test_each_output_container_takes_its_codec(suffix: str, tmp_path) -> None:
    # FFmpeg (PyAV's) muxes the table's encoder into the table's container, and OpenCV's FFmpeg reads it back.
    import av

    fmt, codec = s.VIDEO_CONTAINERS[suffix]
    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for i in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), "rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    cap = cv2.VideoCapture(str(path))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 3
