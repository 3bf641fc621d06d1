"""calibration/precision.py: make_precision's statistics cache and its bad input (one sentence, nothing written)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import onnx
import pytest

from calibration_models import info_of
from scaseg.calibration.precision import make_precision
from scaseg.data.synth import render_scene
from scaseg.errors import ScasegError


def test_statistics_cache_is_reused_and_refused_for_other_preprocessing(fp32_onnx: Path, image_folder: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    kw = dict(calib_dir=str(image_folder), calib_num=8, target="tensorrt", max_miou_drop=100.0, cache_dir=str(cache))
    assert make_precision(str(fp32_onnx), str(tmp_path / "a.onnx"), "int8", method="minmax", **kw)["cache"] == "miss"
    assert make_precision(str(fp32_onnx), str(tmp_path / "b.onnx"), "int8", method="entropy", **kw)["cache"] == "hit"
    other = tmp_path / "other" / fp32_onnx.name  # same name, other normalisation
    other.parent.mkdir()
    proto = onnx.load(str(fp32_onnx))
    for p in proto.metadata_props:
        if p.key == "scaseg":
            p.value = info_of(proto).replace(mean=(0.0, 0.0, 0.0)).to_json()
    onnx.save(proto, str(other))
    status = make_precision(str(other), str(tmp_path / "c.onnx"), "int8", method="minmax", **kw)["cache"]
    assert status.startswith("refused") and "preprocessing" in status


def test_bad_input_gives_one_sentence_and_writes_nothing(fp32_onnx: Path, tmp_path: Path):
    out = tmp_path / "never.onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        cv2.imwrite(str(few / f"{i}.png"), render_scene(i, (32, 64))[0])
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for i in range(7):
        cv2.imwrite(str(corrupt / f"{i}.png"), render_scene(i, (32, 64))[0])
    (corrupt / "3.png").write_bytes(b"not a png")
    bare = tmp_path / "bare.onnx"
    proto = onnx.load(str(fp32_onnx))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    text = tmp_path / "text.onnx"
    text.write_text("hello")
    cases = [
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=str(empty)), "holds no images"),
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=str(few)), "at least 6"),
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=str(tmp_path / "missing")), "not found"),
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=str(corrupt)), "3.png"),
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=None), "--calib"),
        (dict(fp32_onnx=str(bare), calib_dir=str(few)), "no scaseg metadata"),
        (dict(fp32_onnx=str(text), calib_dir=str(few)), "not an ONNX model"),
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=str(few), method="kl"), "calibration method"),
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=str(few), target="gpu"), "int8 target"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ScasegError, match=words) as err:
            make_precision(out_path=str(out), precision="int8", **kwargs)
        assert "\n" not in str(err.value)
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]
    with pytest.raises(ScasegError, match="precision"):
        make_precision(str(fp32_onnx), str(out), "int4", calib_dir=None)
    int8_model = tmp_path / "already.onnx"
    proto = onnx.load(str(fp32_onnx))
    for p in proto.metadata_props:
        if p.key == "scaseg":
            p.value = json.dumps({**json.loads(p.value), "precision": "int8"})
    onnx.save(proto, str(int8_model))
    with pytest.raises(ScasegError, match="already int8"):
        make_precision(str(int8_model), str(out), "fp16", calib_dir=None)
