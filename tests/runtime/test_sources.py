"""Which reader a video file gets: PyAV's planes where they are the stream's own 4:2:0 pictures, else OpenCV."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from runtime_models import make_video
from scaseg.data.synth import render_video
from scaseg.data.video import I420, VideoFile
from scaseg.errors import ScasegError
from scaseg.runtime import sources
from scaseg.runtime.sources import CaptureSource, PlanesSource, open_source


def _h264(path: Path, frames: int = 8, size: tuple[int, int] = (96, 160)) -> Path:
    video = VideoFile(path, 12.0)
    for image, _ in render_video(5, frames, size):
        video.write(image, rgb=True)
    video.close()
    return path


def _pyav(path: Path, pix_fmt: str = "yuv420p", rotation: int = 0, frames: int = 5) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("make", [_h264, lambda p: make_video(p, frames=8)], ids=["h264", "mpeg4"])
def test_a_plain_420_video_is_read_as_planes_with_every_frame_opencv_reads(tmp_path, make):
    path = make(tmp_path / "v.mp4")
    planes, capture = open_source(str(path)), CaptureSource(str(path), "video", "v")
    try:
        assert isinstance(planes, PlanesSource)
        assert (planes.fps, planes.frame_count, planes.size) == (capture.fps, capture.frame_count, capture.size)
        got, want = list(planes), list(capture)
    finally:
        planes.close()
        capture.close()
    assert len(got) == len(want) == 8 and [f.name for f in got] == [f.name for f in want]
    for g, w in zip(got, want):
        assert isinstance(g.planes, I420) and g.readable and g.hw == w.hw
        # The same picture: OpenCV converts with FFmpeg's scaler, the planes with cvtColor (rounding apart).
        assert np.abs(g.image.astype(int) - w.image).mean() < 1.5


@pytest.mark.parametrize("make, why", [
    (lambda p: make_video(p.with_suffix(".avi"), frames=5), "Motion JPEG: full-range YUV"),
    (lambda p: _pyav(p, pix_fmt="yuv444p"), "4:4:4 chroma"),
    (lambda p: _pyav(p, rotation=90), "a rotation to apply"),
])
def test_any_other_video_is_read_by_opencv(tmp_path, make, why):
    path = make(tmp_path / "v.mp4")
    src = open_source(str(path))
    try:
        assert isinstance(src, CaptureSource), why
        frames = list(src)
    finally:
        src.close()
    assert len(frames) == 5 and frames[0].planes is None
    if "rotation" in why:  # OpenCV turns the picture as the stream says
        assert frames[0].hw == (64, 48)


def test_a_stream_pyav_has_no_decoder_for_goes_to_opencv_and_its_error(tmp_path):
    data = _h264(tmp_path / "v.mkv", frames=3).read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    path = tmp_path / "unknown.mkv"
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/AVX"))  # a codec id no decoder claims
    assert PlanesSource.open(str(path), "unknown") is None
    with pytest.raises(ScasegError, match="cannot open the video|no frames that can be decoded"):
        open_source(str(path)).close()


def test_a_container_without_a_frame_count_gets_opencvs_estimate(tmp_path):
    path = _h264(tmp_path / "v.mkv", frames=8)  # Matroska stores no frame count, only a duration
    planes, capture = open_source(str(path)), CaptureSource(str(path), "video", "v")
    try:
        assert isinstance(planes, PlanesSource) and planes.frame_count == capture.frame_count == 8
        assert len(list(planes)) == 8
    finally:
        planes.close()
        capture.close()


def test_a_closed_source_reads_nothing_and_closes_twice(tmp_path):
    src = open_source(str(_h264(tmp_path / "v.mp4", frames=4)))
    frames = iter(src)
    assert next(frames).index == 0
    src.close()
    src.close()
    assert list(frames) == []  # no read of the closed container (PyAV would crash the process)


def test_the_planes_rule_takes_only_upright_limited_range_420_of_even_size():
    plain = dict(format=SimpleNamespace(name="yuv420p"), color_range=1, rotation=0, width=64, height=48)
    assert sources._plain_planes(SimpleNamespace(**plain))
    assert sources._plain_planes(SimpleNamespace(**{**plain, "color_range": 0}))  # unspecified: limited, as FFmpeg
    for change in ({"format": SimpleNamespace(name="yuv420p10le")}, {"color_range": 2}, {"rotation": -90},
                   {"width": 63}, {"height": 47}):
        assert not sources._plain_planes(SimpleNamespace(**{**plain, **change})), change


def test_a_file_pyav_cannot_read_gets_opencvs_error(tmp_path):
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"\x00not a video" * 100)
    assert PlanesSource.open(str(path), "junk") is None
    with pytest.raises(Exception, match="cannot open the video"):
        open_source(str(path))


def test_packets_that_do_not_decode_are_counted_once_a_good_frame_follows(tmp_path, monkeypatch):
    path = _h264(tmp_path / "v.mp4", frames=8)
    real = sources._decoded

    def with_gaps(container, stream):
        for i, picture in enumerate(real(container, stream)):
            if i in (2, 3):
                yield None  # as a packet FFmpeg refused
            else:
                yield picture
        yield None  # a bad packet at the end: nothing follows, so not counted

    monkeypatch.setattr(sources, "_decoded", with_gaps)
    src = open_source(str(path))
    try:
        frames = list(src)
    finally:
        src.close()
    assert [f.index for f in frames] == [0, 1, 4, 5, 6, 7] and src.skipped == 2


def test_a_frame_given_as_planes_makes_its_rgb_picture_once_and_only_when_asked():
    planes = I420(np.full((72, 64), 128, np.uint8))
    frame = sources.Frame(3, "f", None, planes=planes)
    assert frame.readable and frame.hw == (48, 64) and frame._image is None  # nothing converted yet
    image = frame.image
    assert image is not None and image.shape == (48, 64, 3) and frame.image is image
    assert not sources.Frame(4, "g", None, "unreadable").readable
