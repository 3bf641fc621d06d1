"""scaseg-bench end to end: the table, JSON/CSV output, mIoU on a dataset folder, bad input; timing statistics."""
from __future__ import annotations

import csv
import json
import time

import cv2
import numpy as np
import pytest
from runtime_models import halves, halves_labels, make_onnx, run_main

import scaseg.runtime.bench as bench
from scaseg.runtime.bench import format_table, main
from scaseg.runtime.timing import summarize

FAST = ["--warmup", "1", "--runs", "3", "-q"]


def _dataset(root, n=3, right_class=1, classes=("road", "car", "sky")):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"im{i}.png"), cv2.cvtColor(halves(30 + i, 44), cv2.COLOR_RGB2BGR))
        lab = halves_labels(30 + i, 44) * right_class
        lab[0, 0] = 255  # an ignored pixel
        cv2.imwrite(str(root / "labels" / f"im{i}.png"), lab)
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_two_models_table_json_csv(tmp_path, capsys, monkeypatch):
    a = make_onnx(tmp_path / "static.onnx", size=(32, 48))
    b = make_onnx(tmp_path / "dynamic_labels.onnx", size=None, batch=None, output="labels")
    real_decode = bench.decode_image

    def slow_decode(data: bytes) -> np.ndarray:  # end-to-end timing must include decoding: make it take 30 ms
        time.sleep(0.03)
        return real_decode(data)

    monkeypatch.setattr(bench, "decode_image", slow_decode)
    code, out, err = run_main(main, [a, b, "--imgsz", "40x56", "--batch", "1", "-o", tmp_path / "r.json",
                                     "--output", tmp_path / "r.csv"] + FAST, capsys, monkeypatch)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["Model", "Backend", "Device"] and len(lines) == 3
    assert "static.onnx" in lines[1] and "1x32x48" in lines[1]  # a static model keeps its size
    assert "dynamic_labels.onnx" in lines[2] and "1x40x56" in lines[2]
    report = json.loads((tmp_path / "r.json").read_text())
    assert [m["file"] for m in report["models"]] == ["static.onnx", "dynamic_labels.onnx"]
    for m in report["models"]:
        lat = m["latency_ms"]
        assert lat["p50"] <= lat["p90"] <= lat["p99"] and m["fps"] > 0 and m["runs"] == 3
        assert m["end_to_end"]["latency_ms"]["min"] >= 30.0 > lat["min"]  # decoding is timed end to end only
        assert "miou" not in m
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["file"] for r in rows] == ["static.onnx", "dynamic_labels.onnx"]
    assert float(rows[0]["fps"]) == pytest.approx(report["models"][0]["fps"], rel=1e-3)


def test_miou_on_a_dataset_folder(tmp_path, capsys, monkeypatch):
    model = make_onnx(tmp_path / "m.onnx", size=(32, 48))
    good = _dataset(tmp_path / "good", right_class=1)
    wrong = _dataset(tmp_path / "wrong", right_class=2, classes=None)  # no classes.txt: the model's classes
    results = {}
    for name, data in (("good", good), ("wrong", wrong)):
        js = tmp_path / f"{name}.json"
        code, out, err = run_main(main, [model, "--data", data, "-o", js] + FAST, capsys, monkeypatch)
        assert code == 0, err
        results[name] = json.loads(js.read_text())["models"][0]
    good_r, wrong_r = results["good"], results["wrong"]
    assert good_r["miou"] == pytest.approx(1.0) and good_r["pixel_acc"] == pytest.approx(1.0)
    assert good_r["iou"][:2] == [pytest.approx(1.0), pytest.approx(1.0)] and good_r["iou"][2] is None
    assert good_r["images"] == 3 and good_r["class_names"] == ["road", "car", "sky"]
    assert wrong_r["miou"] == pytest.approx(1 / 3) and wrong_r["pixel_acc"] == pytest.approx(0.5, abs=0.02)
    code, out, _ = run_main(main, [model, "--data", good, "--limit", "1"] + FAST, capsys, monkeypatch)
    assert code == 0 and "100.00" in out.splitlines()[1]


@pytest.mark.parametrize("case, message", [
    ("missing", "model not found"),
    ("classes", "has 5 classes but the model predicts 3"),
    ("batch", "fixed batch size of 1"),
    ("no_data", "dataset folder not found"),
    ("junk", "cannot load the ONNX model"),
])
def test_bad_input_is_one_sentence(tmp_path, capsys, monkeypatch, case, message):
    model = make_onnx(tmp_path / "m.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage")
    args = {
        "missing": [model, tmp_path / "typo.onnx"],
        "classes": [model, "--data", _dataset(tmp_path / "d", classes=["a", "b", "c", "d", "e"])],
        "batch": [model, "--batch", "4"],
        "no_data": [model, "--data", tmp_path / "nowhere"],
        "junk": [tmp_path / "junk.onnx"],
    }[case]
    code, out, err = run_main(main, args + FAST + ["-o", tmp_path / "r.json"], capsys, monkeypatch)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scaseg-bench: error: ") and message in lines[0]
    assert not (tmp_path / "r.json").exists()


def test_summarize_percentiles():
    s = summarize([i / 1000 for i in range(1, 101)], items_per_run=2)  # 1..100 ms
    lat = s["latency_ms"]
    assert lat["mean"] == pytest.approx(50.5) and lat["p50"] == pytest.approx(50.5)
    assert lat["p90"] == pytest.approx(90.1) and lat["p99"] == pytest.approx(99.01)
    assert s["fps"] == pytest.approx(2000 / 50.5) and s["runs"] == 100
    with pytest.raises(ValueError):
        summarize([])


def test_format_table_marks_missing_miou():
    rec = {"file": "m.onnx", "backend": "onnxruntime", "device": "CPU", "precision": "int8", "size_mb": 1.25,
           "input_shape": [2, 3, 64, 64], "batch": 2, "latency_ms": {"mean": 10.0}, "fps": 200.0,
           "end_to_end": {"latency_ms": {"mean": 14.0}, "fps": 142.9}}
    row = format_table([rec, {**rec, "miou": 0.4567, "peak_rss_mb": 812.4}]).splitlines()
    assert row[1].split() == ["m.onnx", "onnxruntime", "CPU", "int8", "1.2", "2x64x64", "-", "5.00", "200.0", "7.00", "142.9",
                              "-"]
    assert row[2].split()[6] == "45.67" and row[2].split()[-1] == "812"


def test_without_model_times_the_shipped_default(capsys, monkeypatch):
    code, out, err = run_main(main, ["--warmup", "0", "--runs", "2", "-q"], capsys, monkeypatch)
    assert code == 0, err
    assert "timing the shipped default" in err and "scaseg-t-synth.int8.onnx" in err
    row = out.splitlines()[1].split()
    assert row[0] == "scaseg-t-synth.int8.onnx" and row[3] == "int8" and row[5] == "1x192x384"


def test_per_class_view_shows_the_weakest_class(tmp_path, capsys, monkeypatch):
    model = make_onnx(tmp_path / "m.onnx", size=(32, 48))
    wrong = _dataset(tmp_path / "wrong", right_class=2, classes=None)  # the right half is labelled sky, predicted car
    code, out, err = run_main(main, [model, "--data", wrong, "--per-class"] + FAST, capsys, monkeypatch)
    assert code == 0, err
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["IoU", "(%)", "m.onnx"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert rows["c0"] == ["100.00"] and rows["c1"] == ["0.00"] and rows["c2"] == ["0.00"]
    assert rows["weakest"][0] in ("c1", "c2")
    code, out, err = run_main(main, [model, "--per-class"] + FAST, capsys, monkeypatch)
    assert code == 0 and "--per-class needs --data" in err
