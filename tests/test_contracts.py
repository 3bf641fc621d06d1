"""The shared contracts: preprocessing, model metadata, atomic writes and the CLI error wrapper."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaseg.data.images import read_image, to_rgb_uint8
from scaseg.errors import ScasegError
from scaseg.fileio import atomic_dir, atomic_path
from scaseg.metadata import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, default_palette
from scaseg.runtime.preprocess import (
    labels_to_source,
    logits_to_labels,
    normalize,
    preprocess,
    resize_image,
)


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


def test_normalize_matches_definition():
    img = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    x = normalize(img, IMAGENET_MEAN, IMAGENET_STD)
    assert x.shape == (3, 6, 7) and x.dtype == np.float32 and x.flags.c_contiguous
    ref = (img[2, 3, 1] - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert abs(float(x[1, 2, 3]) - ref) < 1e-5


@pytest.mark.parametrize("policy", ["stretch", "letterbox"])
def test_resize_and_back_recovers_label_layout(policy):
    labels = np.zeros((375, 500), np.uint8)
    labels[:, 250:] = 3
    _, geom = resize_image(np.zeros((375, 500, 3), np.uint8), (128, 128), policy)
    small = np.zeros((128, 128), np.uint8)
    ch, cw = geom.content_hw
    small[:ch, cw // 2 : cw] = 3
    back = labels_to_source(small, geom)
    assert back.shape == (375, 500)
    assert (back == labels).mean() > 0.99
    if policy == "letterbox":
        assert geom.content_hw == (96, 128)


def test_preprocess_keeps_size_when_dynamic():
    x, geom = preprocess(np.zeros((33, 47, 3), np.uint8), None, IMAGENET_MEAN, IMAGENET_STD)
    assert x.shape == (3, 33, 47) and geom.src_hw == geom.dst_hw == (33, 47)


def test_logits_to_labels_batch_and_single():
    logits = np.zeros((2, 4, 3, 3), np.float32)
    logits[0, 2] = 1
    logits[1, 3] = 1
    assert logits_to_labels(logits).tolist()[0][0] == [2, 2, 2]
    assert (logits_to_labels(logits[1]) == 3).all()


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(ScasegError, match="not found"):
        read_image(str(tmp_path / "missing.png"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ScasegError, match="bad.png"):
        read_image(str(bad))


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


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.onnx"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            assert tmp.suffix.endswith(".onnx")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"whole")
    assert dest.read_bytes() == b"whole" and len(list(tmp_path.iterdir())) == 1


def test_atomic_dir_replaces_only_its_own_folders(tmp_path):
    dest = tmp_path / "repo"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    ours = lambda p: (p / "old.txt").is_file()  # noqa: E731 - the marker a previous output carries
    with atomic_dir(dest, owned=ours) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    # A non-empty folder that is not a previous output is refused before the body runs: nothing deleted.
    with pytest.raises(ScasegError, match="not empty"):
        with atomic_dir(dest, owned=ours):
            raise AssertionError("the body must not run")
    assert (dest / "new.txt").read_text() == "new"


def test_run_cli_prints_one_line_and_exits_2():
    code = (
        "from scaseg.errors import run_cli, ScasegError\n"
        "def app():\n    raise ScasegError('the video clip.mp4 has no frames')\n"
        "run_cli(app, prog='scaseg-infer')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == "scaseg-infer: error: the video clip.mp4 has no frames"
    assert "Traceback" not in out.stderr


def test_atomic_outputs_get_normal_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_logits_to_labels_equals_argmax_first_max_wins():
    rng = np.random.default_rng(3)
    logits = rng.integers(0, 4, (2, 7, 9, 11)).astype(np.float32)  # many ties
    assert (logits_to_labels(logits) == np.argmax(logits, axis=1)).all()
    assert (logits_to_labels(logits[0]) == np.argmax(logits[0], axis=0)).all()
    assert logits_to_labels(np.zeros((300, 2, 2), np.float32)).dtype == np.uint16


def _console_scripts() -> dict[str, str]:
    import tomllib

    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(_console_scripts()))
def test_every_command_reports_the_package_version_and_has_help(name):
    import scaseg

    module, func = _console_scripts()[name].split(":")
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {func}; {func}()"
    for flag, expect in (("--version", f"{name} {scaseg.__version__}"), ("--help", "Usage:")):
        done = subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "COLUMNS": "120"})
        assert done.returncode == 0, done.stderr
        assert expect in done.stdout

