"""The OpenVINO backend (runtime/backends/openvino.py), always in a child process.

openvino is never imported into the pytest process: with torch loaded in the same process, a later torch test
crashed after openvino had been imported. Each test runs its OpenVINO part with ``python -c`` (or the console
script) and reads back JSON.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from badinput import command, env, one_line, refused, run
from runtime_models import make_onnx
from paths import TESTS

HAS_OPENVINO = subprocess.run([sys.executable, "-c", "import openvino"], capture_output=True).returncode == 0
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason='openvino is not installed (pip install ".[openvino]")')


def cpu_has_bf16() -> bool:
    """What OpenVINO's CPU plugin needs for bf16, read from the CPU flags (no openvino import here)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return " avx512_bf16" in text or " amx_bf16" in text


def child(code: str, cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter (tests/ on the path); it prints one JSON object last."""
    proc = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(TESTS)!r})\n{code}"], cwd=cwd,
                          capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


COMPARE = """
import json, numpy as np
from runtime_models import halves
from scaseg.data.synth import render_scene
from scaseg.runtime.backends import open_backend
from scaseg.runtime.predictor import Predictor
out = {}
for path in PATHS:
    ort, ov = (Predictor(open_backend(path, name, device="cpu", threads=1), IMGSZ, keep_static_size=True)
               for name in ("onnxruntime", "openvino"))
    images = [halves(37, 53), render_scene(3, (70, 110))[0]]
    equal = [float((ort(im) == ov(im)).mean()) for im in images]
    meta = ov.backend.get_input_metadata()
    out[path] = {"equal": equal, "shape": list(meta.shape), "dtype": str(meta.dtype), "name": ov.backend.name,
                 "precision": ov.backend.precision, "size": list(ov.size) if ov.size else None}
print(json.dumps(out))
"""


@needs_openvino
def test_openvino_labels_equal_onnxruntime(tmp_path: Path) -> None:
    paths = [make_onnx(tmp_path / "static.onnx"), make_onnx(tmp_path / "dyn.onnx", size=None, batch=None),
             make_onnx(tmp_path / "labels.onnx", output="labels"), make_onnx(tmp_path / "int8.onnx", precision="int8")]
    got = child(COMPARE.replace("PATHS", repr([p.name for p in paths])).replace("IMGSZ", "(24, 40)"), tmp_path)
    for name, r in got.items():
        assert r["equal"] == [1.0, 1.0], name
        assert r["name"] == "openvino" and r["dtype"] == "float32"
    assert got["static.onnx"]["shape"] == [1, 3, 32, 48] and got["static.onnx"]["size"] == [32, 48]
    assert got["dyn.onnx"]["shape"] == [None, 3, None, None] and got["dyn.onnx"]["size"] == [24, 40]
    assert got["int8.onnx"]["precision"] == "int8"


@needs_openvino
def test_openvino_runs_a_real_scaseg_export_like_onnxruntime(fp32_onnx: Path, tmp_path: Path) -> None:
    got = child(COMPARE.replace("PATHS", repr([str(fp32_onnx)])).replace("IMGSZ", "None"), tmp_path)[str(fp32_onnx)]
    assert got["shape"] == [1, 3, 64, 128]
    assert min(got["equal"]) >= 0.999  # fp32 both; only near-ties of the random model's logits may differ


@needs_openvino
def test_bench_puts_onnxruntime_and_openvino_in_one_table_with_miou(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS / "runtime"))  # test_bench.py is one folder up: not on sys.path alone
    from test_bench import _dataset

    make_onnx(tmp_path / "m.onnx")
    _dataset(tmp_path / "data")
    proc = run("scaseg-bench", ["m.onnx", "--backend", "onnxruntime", "--backend", "openvino", "--data", "data",
                                "--warmup", "0", "-n", "2", "-q", "-o", "r.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.strip().splitlines()
    assert len(rows) == 3 and rows[1].split()[:2] == ["m.onnx", "onnxruntime"] and rows[2].split()[:2] == ["m.onnx", "openvino"]
    models = json.loads((tmp_path / "r.json").read_text())["models"]
    assert [m["backend"] for m in models] == ["onnxruntime", "openvino"]
    assert models[0]["miou"] == models[1]["miou"] == pytest.approx(1.0)


@needs_openvino
def test_bf16_runs_only_where_the_cpu_has_it(tmp_path: Path) -> None:
    make_onnx(tmp_path / "m.onnx")
    args = ["m.onnx", "--backend", "openvino:bf16", "--warmup", "0", "-n", "1", "-q"]
    if not cpu_has_bf16():
        refused("scaseg-bench", args, tmp_path, expect="needs a CPU with bf16")
        return
    proc = run("scaseg-bench", [*args, "-o", "r.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["models"][0]["precision"] == "bf16"


def test_without_openvino_it_is_one_sentence_naming_the_extra(tmp_path: Path) -> None:
    make_onnx(tmp_path / "m.onnx")
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "openvino.py").write_text("raise ImportError('No module named openvino')\n")
    for prog, args in (("scaseg-bench", ["m.onnx", "--backend", "openvino", "-q"]),
                       ("scaseg-infer", ["x.png", "-m", "m.onnx", "--backend", "openvino", "-q"])):
        environ = {**env(), "PYTHONPATH": f"{blocker}:{env().get('PYTHONPATH', '')}"}
        proc = subprocess.run(command(prog, args), cwd=tmp_path, capture_output=True, text=True, env=environ, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert 'pip install ".[openvino]"' in one_line(proc, prog)


def test_openvino_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    (tmp_path / "m.engine").write_bytes(b"plan")
    refused("scaseg-bench", ["m.engine", "--backend", "openvino", "-q"], tmp_path, expect="runs exported ONNX models")
    make_onnx(tmp_path / "m.onnx")
    refused("scaseg-bench", ["m.onnx", "--backend", "openvino", "--device", "cuda", "-q"], tmp_path,
            expect="runs on the CPU")


# Direct tests of runtime/backends/openvino.py that stop before openvino is imported (so they run in this process).
from scaseg.errors import ScasegError  # noqa: E402
from scaseg.runtime.backends import BACKENDS, RunSettings  # noqa: E402
from scaseg.runtime.backends import openvino as ov_backend  # noqa: E402


@pytest.mark.parametrize("name, settings, precision, message", [
    ("m.pth", RunSettings(), "fp32", "runs exported ONNX models"),
    ("m.onnx", RunSettings.parse("cuda"), "fp32", "runs on the CPU; --device cuda"),
    ("m.onnx", RunSettings.parse("tensorrt"), "fp32", "--device tensorrt"),
    ("m.onnx", RunSettings(), "fp16", "unknown OpenVINO precision 'fp16': expected one of fp32, bf16"),
])
def test_openvino_refuses_before_importing_openvino(tmp_path: Path, monkeypatch, name, settings, precision,
                                                    message) -> None:
    monkeypatch.setattr(ov_backend, "import_openvino", lambda: pytest.fail("openvino was imported"))
    with pytest.raises(ScasegError, match=re.escape(message)):
        ov_backend.OpenVinoBackend(str(tmp_path / name), settings=settings, precision=precision)


def test_missing_openvino_is_one_sentence_with_the_install_hint(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(ScasegError, match=re.escape(ov_backend.INSTALL_HINT)):
        ov_backend.import_openvino()


def test_inference_precision_hints_are_openvinos_names() -> None:
    # OpenVINO's element type names (ov.Type.f32, ov.Type.bf16); fp16 is a file precision, not a hint offered here.
    assert ov_backend.INFERENCE_PRECISION_HINTS == {"fp32": "f32", "bf16": "bf16"}
    assert "openvino:bf16" in BACKENDS


def test_reason_keeps_the_sentence_that_says_why() -> None:
    exc = RuntimeError("Exception from src/inference/src/core.cpp:99:\nCheck 'x' failed at y\n"
                       "[ GENERAL_ERROR ] z\nInput shape [1,3,7,7] is not compatible.\n")
    assert ov_backend._reason(exc) == "Input shape [1,3,7,7] is not compatible"
    assert ov_backend._reason(RuntimeError("Exception from a\nCheck 'b'")) == "Exception from a"
    assert len(ov_backend._reason(RuntimeError("x" * 1000))) == 300
