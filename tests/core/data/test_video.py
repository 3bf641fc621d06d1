"""Videos written through PyAV: the codec per container, every frame in the file, colours kept, one-line failures."""
from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from scaseg.data.synth import render_video
from scaseg.data.video import VideoFile, check_video
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
