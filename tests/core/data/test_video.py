"""Videos written through PyAV: the codec per container, every frame in the file, colours kept, one-line failures."""
from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from scaseg.data.synth import render_video
from scaseg.data.video import I420, VideoFile, check_video
from scaseg.errors import ScasegError


def _read(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@pytest.mark.parametrize("suffix, codec, fmt", [(".mp4", "h264", "mov,mp4"), (".mkv", "h264", "matroska"),
                                               (".avi", "mjpeg", "avi")])
def test_each_container_gets_its_codec_and_every_frame(tmp_path, suffix, codec, fmt):
    scenes = [image for image, _ in render_video(3, 6, (96, 160))]
    path = tmp_path / f"drive{suffix}"
    video = VideoFile(path, 15.0)
    for image in scenes:
        video.write(image, rgb=True)
    video.close()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec and fmt.split(",")[0] in container.format.name
        assert (stream.width, stream.height) == (160, 96) and float(stream.average_rate) == pytest.approx(15.0)
    frames = _read(path)
    assert len(frames) == 6
    for got, want in zip(frames, scenes):  # lossy, but the colours are where they were (RGB order, BT.601 range)
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 8


def _planes(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]


def test_i420_planes_views_and_conversions():
    ramp = np.linspace(0, 255, 160)
    rgb = np.stack(np.broadcast_arrays(ramp[None, :], np.linspace(255, 0, 96)[:, None], 128), -1).astype(np.uint8)
    planes = I420.from_rgb(rgb)
    assert planes.hw == (96, 160) and planes.planes.shape == (144, 160)
    y, u, v = planes.split()
    assert y.shape == (96, 160) and u.shape == v.shape == (48, 80)
    assert np.shares_memory(u, planes.planes) and np.shares_memory(v, planes.planes) and not np.shares_memory(u, v)
    assert (planes.planes[96:].ravel()[: 48 * 80] == u.ravel()).all()  # U's bytes come first, then V's
    back = np.abs(planes.rgb().astype(int) - rgb)
    assert back.mean() < 1.5 and back.max() <= 6  # 4:2:0 keeps a smooth picture's colours (rounding, clipping)
    for bad in (np.zeros((143, 160), np.uint8), np.zeros((144, 161), np.uint8), np.zeros((144, 160), np.uint16),
                np.zeros((144, 320), np.uint8)[:, ::2], np.zeros((0, 160), np.uint8)):
        with pytest.raises(ValueError, match="I420 planes"):
            I420(bad)


def test_yuv_to_rgb_is_opencvs_i420_conversion_with_chroma_at_full_size():
    rng = np.random.default_rng(0)
    planes = I420(rng.integers(0, 256, (90, 64), dtype=np.uint8))  # every Y, U and V, Y below 16 included
    y, u, v = planes.split()
    full = [cv2.resize(c, (64, 60), interpolation=cv2.INTER_NEAREST) for c in (u, v)]  # what cvtColor's I420 repeats
    got = I420.yuv_to_rgb(cv2.merge([y] + full))
    want = planes.rgb()
    assert np.abs(got.astype(int) - want).max() <= 1  # the same constants; fixed-point vs float rounding only
    assert (got == want).mean() > 0.95


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_planes_are_encoded_as_the_rgb_frame_they_convert_from_would_be(tmp_path, suffix):
    scenes = [image for image, _ in render_video(3, 4, (96, 160))]
    as_rgb, as_planes = VideoFile(tmp_path / f"rgb{suffix}", 15.0), VideoFile(tmp_path / f"planes{suffix}", 15.0)
    for image in scenes:
        as_rgb.write(image, rgb=True)
        as_planes.write(I420.from_rgb(image))
    as_rgb.close()
    as_planes.close()
    got, want = _planes(tmp_path / f"planes{suffix}"), _planes(tmp_path / f"rgb{suffix}")
    assert len(got) == len(want) == 4
    if suffix == ".mp4":  # H.264: the planes go to the encoder untouched, so the same pictures come out
        assert all((g == w).all() for g, w in zip(got, want))
    else:  # Motion JPEG takes full-range RGB through FFmpeg's scaler: the planes are converted back first
        assert all(np.abs(g.astype(int) - w).mean() < 2 for g, w in zip(got, want))


def test_bgr_and_grayscale_frames_and_odd_sizes(tmp_path):
    rgb = np.zeros((33, 47, 3), np.uint8)
    rgb[..., 0] = 200  # red
    video = VideoFile(tmp_path / "odd.mp4", 10.0)
    video.write(rgb, rgb=True)
    video.write(rgb[..., ::-1].copy())  # the same frame in OpenCV's BGR order
    video.write(np.full((33, 47), 90, np.uint8))  # grayscale
    video.write(np.zeros((20, 20, 3), np.uint8))  # another size: scaled to the first
    video.close()
    frames = _read(tmp_path / "odd.mp4")
    assert len(frames) == 4 and frames[0].shape == (34, 48, 3)  # padded to even: 4:2:0 needs it
    for f in frames[:2]:
        assert abs(f[:33, :47, 0].mean() - 200) < 6 and f[:33, :47, 1:].mean() < 12
    assert abs(frames[2].mean() - 90) < 6


def test_an_encoder_that_cannot_open_is_one_sentence_and_leaves_the_file_closed(tmp_path):
    video = VideoFile(tmp_path / "gpu.mp4", 30.0, codec="no_such_encoder")
    with pytest.raises(ScasegError, match="FFmpeg cannot encode no_such_encoder video of 64x48"):
        video.write(np.zeros((48, 64, 3), np.uint8))


def test_a_frame_count_that_differs_is_refused(tmp_path):
    video = VideoFile(tmp_path / "v.mp4", 30.0)
    for _ in range(3):
        video.write(np.zeros((32, 32, 3), np.uint8))
    video.close()
    check_video(tmp_path / "v.mp4", 3)
    with pytest.raises(ScasegError, match="holds 3 of the 5 frames"):
        check_video(tmp_path / "v.mp4", 5)
    (tmp_path / "half.mp4").write_bytes((tmp_path / "v.mp4").read_bytes()[:200])
    with pytest.raises(ScasegError, match="incomplete"):
        check_video(tmp_path / "half.mp4", 3)


def test_a_file_size_limit_mid_video_is_one_line_and_leaves_nothing(tmp_path):
    import resource
    import subprocess

    from badinput import command, env, one_line, tree

    video = VideoFile(tmp_path / "clip.mp4", 30.0)
    for image, _ in render_video(0, 30, (240, 320)):
        video.write(image, rgb=True)
    video.close()
    before = tree(tmp_path)
    limit = 64 * 1024  # bytes: the overlay video outgrows it after a few frames

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(command("scaseg-infer", ["clip.mp4", "-o", "out.mp4", "-q"]), cwd=tmp_path, capture_output=True,
                          text=True, env=env(), timeout=240, preexec_fn=limited)
    assert proc.returncode == 2, proc.stderr
    assert "cannot write out.mp4" in one_line(proc, "scaseg-infer") and "file size limit" in proc.stderr
    assert tree(tmp_path) == before
