"""scaseg-infer end to end: videos, images, folders, label maps, bad input, Ctrl-C; plus the overlay drawing."""
from __future__ import annotations

import _thread
import re
import threading
import time

import cv2
import numpy as np
import pytest
from runtime_models import GREEN, RED, halves, halves_labels, make_onnx, make_video, run_main

from scaseg.runtime.backends import open_backend
from scaseg.runtime.infer import main
from scaseg.metadata import default_palette
from scaseg.runtime.overlay import blend, colorize, draw_legend, palette_lut, render_overlay
from scaseg.runtime.predictor import Predictor
from scaseg.runtime.pipeline import run_pipeline
from scaseg.runtime.sinks import ImageSink
from scaseg.runtime.sources import open_source


@pytest.fixture()
def model(tmp_path):
    return make_onnx(tmp_path / "m.onnx", size=(32, 48))


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


def test_video_to_overlay_video(tmp_path, model, capsys, monkeypatch):
    video = make_video(tmp_path / "clip.mp4", frames=7, size=(48, 64), fps=12)
    code, _, err = run_main(main, [video, "--model", model, "--alpha", "1.0", "-q"], capsys, monkeypatch)
    assert code == 0, err
    out = tmp_path / "clip_seg.mp4"
    frames, fps = _frames(out)
    assert len(frames) == 7 and frames[0].shape == (48, 64, 3) and fps == pytest.approx(12, abs=0.01)
    palette = default_palette(3)
    # alpha 1: the pure class colour (lossy codec: compare region means away from the class border)
    assert np.abs(frames[3][:, 4:24].reshape(-1, 3).mean(0) - palette[0]).max() < 12
    assert np.abs(frames[3][:, 40:60].reshape(-1, 3).mean(0) - palette[1]).max() < 12
    assert "7 frames" in err and not list(tmp_path.glob(".*tmp*"))


def test_video_to_label_pngs(tmp_path, model, capsys, monkeypatch):
    video = make_video(tmp_path / "clip.avi", frames=4, size=(40, 56))
    code, _, err = run_main(main, [video, "-m", model, "--save-labels", "-o", tmp_path / "labels", "-q"], capsys, monkeypatch)
    assert code == 0, err
    pngs = sorted((tmp_path / "labels").glob("*.png"))
    assert [p.name for p in pngs] == [f"clip_{i:06d}.png" for i in range(4)]
    lab = cv2.imread(str(pngs[2]), cv2.IMREAD_UNCHANGED)
    assert lab.shape == (40, 56) and lab.dtype == np.uint8
    # MJPG blurs the colour edge; away from it the labels are exact
    expected = halves_labels(40, 56)
    assert (lab[:, :24] == expected[:, :24]).all() and (lab[:, 32:] == expected[:, 32:]).all()


def test_two_streams_write_the_same_label_maps_as_one(tmp_path, capsys, monkeypatch):
    from scaseg import default_model
    from scaseg.data.synth import render_video
    from scaseg.data.video import VideoFile

    video = tmp_path / "clip.mp4"  # a drive down a synthetic street: every frame differs
    writer = VideoFile(video, 10.0)
    for image, _ in render_video(0, 12, (96, 160)):
        writer.write(image, rgb=True)
    writer.close()
    outs = {}
    for streams in ("1", "2", "auto"):
        out = tmp_path / f"labels{streams}"
        code, _, err = run_main(main, [video, "-m", default_model(), "--save-labels", "-o", out, "--threads", "2",
                                       "--streams", streams], capsys, monkeypatch)
        assert code == 0, err
        if streams == "auto":  # the default: 1 and 2 timed at load, the choice said, and the run made with it
            chosen = re.search(r"threads 2 \(given\); streams ([12]) \(auto: timed 1 vs 2 at load: ", err)
            assert chosen, err
            assert ("per stream x 2 streams" in err) == (chosen.group(1) == "2")
        else:
            assert ("per stream x 2 streams" in err) == (streams == "2")
        outs[streams] = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(out.glob("*.png"))}
    assert list(outs["1"]) == [f"clip_{i:06d}.png" for i in range(12)] and list(outs["2"]) == list(outs["1"])
    assert all((outs["1"][k] == outs[s][k]).all() for k in outs["1"] for s in ("2", "auto"))
    assert len({outs["1"][k].tobytes() for k in outs["1"]}) > 1  # the frames differ, so order matters


def _street(path, frames=8, size=(96, 160)):
    from scaseg.data.synth import render_video
    from scaseg.data.video import VideoFile

    writer = VideoFile(path, 10.0)
    for image, _ in render_video(0, frames, size):
        writer.write(image, rgb=True)
    writer.close()
    return path


def test_an_overlay_video_is_drawn_in_the_decoders_planes_and_matches_the_rgb_path(tmp_path, capsys, monkeypatch):
    from scaseg import default_model
    from scaseg.data.video import I420
    from scaseg.runtime import sources

    video = _street(tmp_path / "clip.mp4")
    src = open_source(str(video))
    src.close()
    assert isinstance(src, sources.PlanesSource)  # else both runs below would take the RGB path
    for alpha in ("0", "0.5"):
        args = ["-m", default_model(), "--threads", "2", "--alpha", alpha, "-q"]
        with monkeypatch.context() as patched:  # no camera-sized RGB picture may be made on the way
            patched.setattr(I420, "rgb", lambda self: pytest.fail("an RGB picture of a whole frame was made"))
            code, _, err = run_main(main, [video, "-o", tmp_path / f"planes{alpha}.mp4", *args], capsys, monkeypatch)
        assert code == 0, err
        with monkeypatch.context() as patched:  # the same video read by OpenCV as RGB frames: the path before
            patched.setattr(sources.PlanesSource, "open", classmethod(lambda cls, path, name: None))
            code, _, err = run_main(main, [video, "-o", tmp_path / f"rgb{alpha}.mp4", *args], capsys, monkeypatch)
        assert code == 0, err
        got, _ = _frames(tmp_path / f"planes{alpha}.mp4")
        want, _ = _frames(tmp_path / f"rgb{alpha}.mp4")
        assert len(got) == len(want) == 8
        for g, w in zip(got, want):
            off = np.abs(g.astype(int) - w).max(axis=-1)
            if alpha == "0":  # the frame itself, encoded again: decoder and rounding apart, the same picture
                assert off.mean() < 3.5 and (off > 16).mean() < 0.02
            else:  # the same overlay but where a label flipped (docs/runtime.md: 2 to 3% of pixels at this size)
                assert (off > 24).mean() < 0.06 and off.mean() < 8


def test_a_legend_an_avi_or_a_label_output_takes_the_rgb_path_from_planes(tmp_path, model, capsys, monkeypatch):
    from scaseg.runtime import infer

    video = _street(tmp_path / "clip.mp4", frames=3)
    monkeypatch.setattr(infer, "render_overlay_planes", lambda *a: pytest.fail("an overlay was drawn in planes"))
    runs = {"legend.mp4": ["--legend"], "mjpeg.avi": [], "labels": ["--save-labels"]}
    for out, extra in runs.items():
        code, _, err = run_main(main, [video, "-m", model, *extra, "-o", tmp_path / out, "-q"], capsys, monkeypatch)
        assert code == 0, err
    legend, _ = _frames(tmp_path / "legend.mp4")
    plain, _ = _frames(tmp_path / "mjpeg.avi")
    assert len(legend) == len(plain) == 3
    assert legend[0][:12, :12].mean() < 0.7 * plain[0][:12, :12].mean()  # the legend's darkened box is drawn
    assert len(list((tmp_path / "labels").glob("*.png"))) == 3


def test_a_damaged_h264_video_is_segmented_as_far_as_it_decodes(tmp_path, model, capsys, monkeypatch):
    clip = _street(tmp_path / "clip.mp4", frames=20)
    data = bytearray(clip.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = bytes(2000)  # a run of packets in the middle of the stream wiped
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    code, _, err = run_main(main, [bad, "-m", model, "-q"], capsys, monkeypatch)
    assert code == 0, err
    frames, _ = _frames(tmp_path / "bad_seg.mp4")
    assert 10 <= len(frames) <= 20 and "Traceback" not in err


def test_folder_with_bad_and_odd_images(tmp_path, model, capsys, monkeypatch):
    src = tmp_path / "pics"
    src.mkdir()
    rgb = halves(31, 45)
    cv2.imwrite(str(src / "a_color.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(src / "b_gray.png"), np.full((20, 33), 200, np.uint8))
    cv2.imwrite(str(src / "c_rgba.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))
    cv2.imwrite(str(src / "d_16bit.png"), (cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257))
    (src / "e_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    code, _, err = run_main(main, [src, "-m", model, "--output-kind", "labels", "-q"], capsys, monkeypatch)
    assert code == 0, err
    out = tmp_path / "pics_seg"
    assert sorted(p.name for p in out.iterdir()) == ["a_color.png", "b_gray.png", "c_rgba.png", "d_16bit.png",
                                                     "scaseg-infer.json"]
    for name in ("a_color", "c_rgba", "d_16bit"):
        lab = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert lab.shape == (31, 45)
        assert (lab[:, :20] == 0).all() and (lab[:, 25:] == 1).all()
    assert "skipped 1 unreadable" in err and "e_corrupt" in err


def test_single_image_overlay_with_legend(tmp_path, model, capsys, monkeypatch):
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), cv2.cvtColor(halves(120, 160), cv2.COLOR_RGB2BGR))
    for extra, name in (([], "plain.png"), (["--legend"], "legend.png")):
        code, _, err = run_main(main, [image, "-m", model, "-o", tmp_path / name, "-q"] + extra, capsys, monkeypatch)
        assert code == 0, err
    plain = cv2.imread(str(tmp_path / "plain.png"))
    legend = cv2.imread(str(tmp_path / "legend.png"))
    assert plain.shape == (120, 160, 3)
    assert (plain[:20, :30] != legend[:20, :30]).any()  # the legend is drawn top-left
    assert (plain[60:, 100:] == legend[60:, 100:]).all()  # and nowhere else
    code, _, _ = run_main(main, [image, "-m", model, "-q"], capsys, monkeypatch)
    assert code == 0 and (tmp_path / "street_seg.png").is_file()


@pytest.mark.parametrize("case", ["missing", "zero_frames", "not_video", "bad_model", "mismatch", "bad_output"])
def test_bad_input_is_one_sentence(tmp_path, model, capsys, monkeypatch, case):
    video = make_video(tmp_path / "ok.mp4", frames=2)
    args = {
        "missing": [tmp_path / "nope.mp4", "-m", model],
        "zero_frames": [tmp_path / "empty.mp4", "-m", model],
        "not_video": [tmp_path / "text.mkv", "-m", model],
        "bad_model": [video, "-m", tmp_path / "nope.onnx"],
        "mismatch": [video, "-m", make_onnx(tmp_path / "mm.onnx", info_changes={"output_name": "seg"})],
        "bad_output": [video, "-m", model, "-o", tmp_path / "out.txt"],
    }[case]
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mkv").write_text("hello " * 100)
    code, out, err = run_main(main, args, capsys, monkeypatch)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scaseg-infer: error: ") and "Traceback" not in err
    assert not list(tmp_path.glob("*_seg*")) and not list(tmp_path.glob(".*tmp*"))


def test_ctrl_c_leaves_a_playable_video(tmp_path, model, capsys, monkeypatch):
    video = make_video(tmp_path / "long.mp4", frames=3000, size=(32, 48))
    out = tmp_path / "long_seg.mp4"
    fired = threading.Event()

    def interrupt_when_writing() -> None:
        deadline = time.time() + 30
        # Frames are being encoded once the temporary has bytes (an interrupt before that keeps nothing, rightly).
        while time.time() < deadline and not [p for p in tmp_path.glob(".long_seg.mp4.*") if p.stat().st_size]:
            time.sleep(0.002)
        if time.time() < deadline:
            time.sleep(0.02)
            fired.set()
            _thread.interrupt_main()  # what Ctrl-C does to the main thread

    watcher = threading.Thread(target=interrupt_when_writing, daemon=True)
    watcher.start()
    code, _, err = run_main(main, [video, "-m", model, "-q"], capsys, monkeypatch)
    watcher.join()
    assert fired.is_set() and code == 130, err
    assert "interrupted after" in err
    frames, _ = _frames(out)
    assert 0 < len(frames) < 3000
    assert not list(tmp_path.glob(".*tmp*"))


def test_pipeline_batches_and_bounds(tmp_path):
    be = open_backend(make_onnx(tmp_path / "dyn.onnx", size=None, batch=None))
    pred = Predictor(be, (16, 16), batch=3)
    src = open_source(str(make_video(tmp_path / "v.mp4", frames=10, size=(40, 40))))
    seen = []
    stats = run_pipeline(src, pred, lambda f, lab: seen.append((f.index, lab.shape)), queue_size=2, progress=False)
    assert [i for i, _ in seen] == list(range(10)) and all(s == (40, 40) for _, s in seen)
    assert stats.frames == 10 and stats.skipped == 0 and 4 <= stats.infer_calls <= 10
    src = open_source(str(tmp_path / "v.mp4"))
    stats = run_pipeline(src, pred, lambda f, lab: None, max_frames=3, progress=False)
    assert stats.frames == 3


def test_pipeline_reraises_a_consumer_error(tmp_path, model):
    pred = Predictor(open_backend(model))
    src = open_source(str(make_video(tmp_path / "v.mp4", frames=20)))

    def boom(frame, labels):
        if frame.index == 2:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        run_pipeline(src, pred, boom, queue_size=1, progress=False)


def test_overlay_functions():
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    palette = [(10, 20, 30), (40, 50, 60), (70, 80, 90)]
    mask = colorize(labels, palette)
    assert mask[0, 1].tolist() == [40, 50, 60] and mask[1, 1].tolist() == [0, 0, 0]
    assert (colorize(labels.astype(np.int64), palette_lut(palette)) == mask).all()
    image = np.full((2, 2, 3), 200, np.uint8)
    assert (blend(image, mask, 0.0) == image).all() and (blend(image, mask, 1.0) == mask).all()
    big = np.zeros((200, 300, 3), np.uint8)
    drawn = draw_legend(big, ["road", "car", "sky"], palette, classes=[1])
    assert (drawn[:40, :40] == palette[1]).all(axis=-1).any()  # the car swatch
    assert not (drawn[:40, :40] == palette[0]).all(axis=-1).any()  # road not present: not listed
    image, labels = halves(200, 300, RED, GREEN), halves_labels(200, 300)
    plain = render_overlay(image, labels, palette, 0.5)
    assert (plain == blend(image, colorize(labels, palette), 0.5)).all()
    out = render_overlay(image, labels, palette, 0.5, ["road", "car", "sky"])
    assert (out[:40, :40] != plain[:40, :40]).any() and (out[:, 150:] == plain[:, 150:]).all()  # a legend, top-left
    swatches = out[:40, :40].reshape(-1, 3).tolist()
    assert list(palette[0]) in swatches and list(palette[1]) in swatches  # road and car are in the picture
    assert list(palette[2]) not in swatches  # sky is not: not listed


def test_image_sink_writes_uint16_labels(tmp_path):
    sink = ImageSink(folder=tmp_path, suffix=".png")
    sink.write("sub/x", np.array([[0, 300], [1000, 5]], np.uint16))
    back = cv2.imread(str(tmp_path / "sub" / "x.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.tolist() == [[0, 300], [1000, 5]]


def test_corrupt_video_frames_are_skipped_and_counted(tmp_path, model, capsys, monkeypatch):
    clip = make_video(tmp_path / "clip.avi", frames=10, size=(48, 64))
    data = bytearray(clip.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]  # JPEG frame starts
    assert len(starts) == 10
    for k in (4, 5):  # wipe the headers of two frames: FFmpeg can no longer decode them
        data[starts[k]:starts[k] + 300] = bytes(300)
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))
    code, _, err = run_main(main, [bad, "-m", model, "-q"], capsys, monkeypatch)
    assert code == 0, err
    frames, _ = _frames(tmp_path / "bad_seg.mp4")
    assert 5 <= len(frames) < 10
    assert "warning: skipped" in err


def test_show_without_display_is_refused(tmp_path, model, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    video = make_video(tmp_path / "v.mp4", frames=2)
    code, _, err = run_main(main, [video, "-m", model, "--show"], capsys, monkeypatch)
    assert code == 2 and "--show needs a display" in err


def test_without_model_runs_the_shipped_default_and_says_so(tmp_path, capsys, monkeypatch):
    from scaseg.data.synth import render_scene

    import scaseg

    folder = tmp_path / "street"
    folder.mkdir()
    labels = {}
    for i, seed in enumerate((424_242, 515_151)):  # seeds far from the recipe's scenes
        image, label = render_scene(seed, (256, 512))
        cv2.imwrite(str(folder / f"s{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        labels[f"s{i}.png"] = label
    code, _, err = run_main(main, [folder, "--output-kind", "labels"], capsys, monkeypatch)
    assert code == 0, err
    assert f"model {scaseg.default_model()} (the shipped default" in err
    assert "(scaseg-t-synth.int8.onnx, the shipped default; onnxruntime" in err
    for name, label in labels.items():
        pred = cv2.imread(str(tmp_path / "street_seg" / name), cv2.IMREAD_UNCHANGED)
        valid = label != 255
        assert pred.shape == label.shape and np.mean(pred[valid] == label[valid]) > 0.8  # it has learnt the scenes


def test_a_4_3_source_keeps_its_aspect_ratio_by_default(tmp_path, capsys, monkeypatch):
    model = make_onnx(tmp_path / "wide.onnx", size=(32, 64))  # a 2:1 input, as the shipped model's
    image = tmp_path / "cam.png"
    cv2.imwrite(str(image), cv2.cvtColor(halves(60, 80), cv2.COLOR_RGB2BGR))  # 4:3, like a 768x576 camera
    with open_backend(model) as be:
        _, geom = Predictor(be, resize="letterbox").prepare(halves(60, 80))
    assert geom.dst_hw == (32, 64) and geom.content_hw == (32, 43)  # scaled to fit, ratio kept, padded on the right
    code, _, err = run_main(main, [image, "-m", model, "--output-kind", "labels", "-q"], capsys, monkeypatch)
    assert code == 0, err
    labels = cv2.imread(str(tmp_path / "cam_seg.png"), cv2.IMREAD_UNCHANGED)
    truth = halves_labels(60, 80)
    # Cropped back before resizing to the source: the padding would otherwise smear over the right half.
    assert labels.shape == (60, 80) and np.mean(labels != truth) < 0.03
    assert "stretched" not in err
    code, _, err = run_main(main, [image, "-m", model, "--output-kind", "labels", "--resize", "stretch",
                                   "-o", tmp_path / "s.png"], capsys, monkeypatch)
    assert code == 0 and "60x80 frames are stretched to the model's 32x64 input (aspect ratio changed" in err


def test_video_codec_picks_the_encoder_and_is_checked_at_the_edge(tmp_path, model, capsys, monkeypatch):
    import av

    video = make_video(tmp_path / "clip.mp4", frames=3, size=(48, 64))
    code, _, err = run_main(main, [video, "-m", model, "-o", tmp_path / "m4.mp4", "--video-codec", "mpeg4", "-q"],
                            capsys, monkeypatch)
    assert code == 0, err
    with av.open(str(tmp_path / "m4.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4" and container.streams.video[0].frames == 3
    code, _, err = run_main(main, [video, "-m", model, "-o", tmp_path / "x.mp4", "--video-codec", "h265x", "-q"],
                            capsys, monkeypatch)
    assert code == 2 and "no video encoder of that name" in err and not (tmp_path / "x.mp4").exists()
    code, _, err = run_main(main, [video, "-m", model, "--save-labels", "-o", tmp_path / "lab", "--video-codec",
                                   "mpeg4", "-q"], capsys, monkeypatch)
    assert code == 2 and "applies to a video output" in err and not (tmp_path / "lab").exists()
