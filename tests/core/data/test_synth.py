"""Synthetic street scenes: exact, deterministic, non-trivial, written atomically as a Cityscapes dataset."""
from __future__ import annotations

import shutil
import sys

import cv2
import numpy as np
import pytest

import scaseg.data.synth.writer as synth_writer
from scaseg.data.datasets import open_dataset
from scaseg.errors import ScasegError
from scaseg.data.metrics import SegMetrics
from scaseg.data.synth import SYNTH_CLASSES, render_scene, write_dataset
from scaseg.data.synth.cli import main
from paths import benchmark

ALLOWED = set(SYNTH_CLASSES.values()) | {255}


def test_render_scene_is_deterministic_with_cityscapes_train_ids():
    img, lab = render_scene(7, (96, 192))
    assert img.shape == (96, 192, 3) and img.dtype == np.uint8
    assert lab.shape == (96, 192) and lab.dtype == np.uint8
    assert set(np.unique(lab).tolist()) <= ALLOWED
    img2, lab2 = render_scene(7, (96, 192))
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lab, lab2)
    img3, _ = render_scene(8, (96, 192))
    assert not np.array_equal(img, img3)
    assert SYNTH_CLASSES == {"road": 0, "sidewalk": 1, "building": 2, "vegetation": 8, "sky": 10, "person": 11, "car": 13}


def test_every_class_appears_across_a_few_scenes():
    seen = set()
    for seed in range(8):
        seen |= set(np.unique(render_scene(seed, (96, 192))[1]).tolist())
    assert set(SYNTH_CLASSES.values()) <= seen


def _edge_ratio(img: np.ndarray, lab: np.ndarray) -> float:
    """Mean colour step across label boundaries over the mean step elsewhere (both image axes)."""
    img = img.astype(np.int16)
    steps, edges = [], []
    for axis in (0, 1):
        steps.append(np.abs(np.diff(img, axis=axis)).sum(-1).ravel())
        edges.append((np.diff(lab.astype(np.int16), axis=axis) != 0).ravel())
    step, edge = np.concatenate(steps), np.concatenate(edges)
    return float(step[edge].mean() / step[~edge].mean())


def test_labels_lie_exactly_on_the_image_edges():
    ratios, shifted = [], []
    for seed in range(4):
        img, lab = render_scene(seed, (128, 256))
        ratios.append(_edge_ratio(img, lab))
        shifted.append(_edge_ratio(img, np.roll(lab, (2, 2), axis=(0, 1))))
    # Objects end where their labels end: a label two pixels off already loses most of the contrast.
    assert min(ratios) > 4.0, ratios
    assert all(r > 1.5 * s for r, s in zip(ratios, shifted)), (ratios, shifted)


def test_colour_alone_does_not_solve_the_scenes():
    train = [render_scene(100 + s, (96, 192)) for s in range(12)]
    test = [render_scene(200 + s, (96, 192)) for s in range(6)]
    # Same-colour classes (grey cars, asphalt, concrete, overcast sky) keep a pure colour lookup far from solving it.
    assert benchmark("bench_synth").colour_lookup_miou(train, test) < 0.45
    # ...while the lookup does work on its own training images, so the number above is not a broken classifier.
    assert benchmark("bench_synth").colour_lookup_miou(train[:2], train[:2]) > 0.5


def test_write_dataset_is_a_cityscapes_dataset_with_a_video(tmp_path):
    out = tmp_path / "synth"
    summary = write_dataset(out, 5, seed=3, size=(64, 128), val_fraction=0.4, video_frames=4, progress=False)
    assert (summary["num_train"], summary["num_val"], summary["video_frames"]) == (3, 2, 4)
    assert abs(sum(summary["class_fraction"].values()) + summary["ignored_fraction"] - 1.0) < 1e-3
    train, val = open_dataset(out, split="train"), open_dataset(out, "cityscapes", "val")
    assert (len(train), len(val), train.num_classes, train.kind) == (3, 2, 19, "cityscapes")
    assert val.names == ["synth_000003_000019", "synth_000004_000019"]
    sample = val[0]
    assert sample.image.shape == (64, 128, 3) and set(np.unique(sample.label).tolist()) <= ALLOWED
    # The *_labelIds.png files encode the same labels: read them alone through the official id table.
    for path in (out / "gtFine" / "val").rglob("*_labelTrainIds.png"):
        path.unlink()
    by_ids = open_dataset(out, "cityscapes", "val")
    assert by_ids.label_format == "cityscapes_ids"
    np.testing.assert_array_equal(by_ids[0].label, sample.label)
    cap = cv2.VideoCapture(str(out / "video" / "synth.mp4"))
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (64, 128, 3)
        frames += 1
    cap.release()
    assert frames == 4
    assert sorted(p.name for p in (out / "video" / "labels").iterdir()) == [f"{t:06d}.png" for t in range(4)]


def test_same_seed_same_bytes(tmp_path):
    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a = write_dataset(tmp_path / "a", 3, seed=5, size=(48, 96), video_frames=3, progress=False)
    b = write_dataset(tmp_path / "b", 3, seed=5, size=(48, 96), video_frames=3, progress=False)
    fa, fb = files(tmp_path / "a"), files(tmp_path / "b")
    assert fa == fb and len(fa) == 3 * 3 + 3 + 1 + 1  # images + 2 labels each, video labels, mp4, synth.json
    assert a["class_fraction"] == b["class_fraction"]
    write_dataset(tmp_path / "c", 3, seed=6, size=(48, 96), video_frames=0, progress=False)
    name = "leftImg8bit/train/synth/synth_000000_000019_leftImg8bit.png"
    assert files(tmp_path / "c")[name] != fa[name]


def test_worker_processes_write_the_same_bytes(tmp_path):
    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    one = write_dataset(tmp_path / "one", 5, seed=2, size=(48, 96), val_fraction=0.4, video_frames=0, progress=False)
    two = write_dataset(tmp_path / "two", 5, seed=2, size=(48, 96), val_fraction=0.4, video_frames=0, progress=False,
                        workers=2)
    fa, fb = files(tmp_path / "one"), files(tmp_path / "two")
    assert fa == fb and len(fa) == 5 * 3 + 1
    assert one["class_fraction"] == two["class_fraction"] and (one["num_train"], one["num_val"]) == (3, 2)


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synth_writer.render_scene

    def flaky(seed, size):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(seed, size)

    monkeypatch.setattr(synth_writer, "render_scene", flaky)  # the name write_dataset calls
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "out", 5, size=(48, 96), video_frames=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_rewrites_its_own_output_but_refuses_other_folders(tmp_path):
    out = tmp_path / "out"
    write_dataset(out, 3, size=(48, 96), video_frames=0, progress=False)
    write_dataset(out, 2, size=(48, 96), val_fraction=0.0, video_frames=0, progress=False)
    assert len(list((out / "leftImg8bit" / "train" / "synth").iterdir())) == 2
    assert not (out / "leftImg8bit" / "val").exists()
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ScasegError, match="not empty and is not a scaseg-synth dataset"):
        write_dataset(foreign, 2, size=(48, 96), video_frames=0, progress=False)
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"]


def _run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["scaseg-synth", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


def test_cli_writes_and_shows_progress(tmp_path, monkeypatch, capsys):
    code, out, err = _run_cli(monkeypatch, capsys, str(tmp_path / "d"), "--num", "3", "--seed", "1",
                              "--size", "48x96", "--val-fraction", "0.34", "--video-frames", "2")
    assert code == 0, err
    assert "wrote 2 train + 1 val images (48x96) and a 2-frame video" in out
    assert "100%" in err and "img/s" in err  # the tqdm bar, on stderr
    assert (tmp_path / "d" / "video" / "synth.mp4").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--num", "0"], "at least 1"),
    (["--size", "10"], "between 32x32"),
    (["--val-fraction", "1.0"], "validation fraction"),
    (["--video-frames", "-1"], "video frames"),
    (["--workers", "0"], "workers must be at least 1"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, args, message):
    code, _, err = _run_cli(monkeypatch, capsys, str(tmp_path / "d"), *args)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_cli_output_is_a_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    code, _, err = _run_cli(monkeypatch, capsys, str(target), "--num", "1")
    assert code == 2 and "is not a folder" in err
    code, _, err = _run_cli(monkeypatch, capsys, str(target / "below"), "--num", "1")
    assert code == 2 and "cannot create the output folder" in err
    assert target.read_text() == "x"


@pytest.mark.skipif(shutil.which("id") is None or __import__("os").geteuid() == 0,
                    reason="root can write anywhere: no unwritable folder to test with")
def test_cli_unwritable_parent(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = _run_cli(monkeypatch, capsys, str(locked / "out"), "--num", "1")
    assert code == 2 and "not writable" in err
