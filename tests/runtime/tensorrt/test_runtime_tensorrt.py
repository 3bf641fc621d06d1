"""runtime/tensorrt/ (``scaseg.runtime.tensorrt``): which TensorRT is here, whether an engine can run, the runner,
the plugin's math and CUDA access; GPU round trips (build, run, compare with ONNX Runtime) behind the ``gpu`` marker.

Nothing in the non-gpu tests imports TensorRT: they cover what can be decided without it and the behaviour when
TensorRT is missing (one sentence, nothing written).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scaseg.errors import ScasegError
from scaseg.export.engine import builder as engine_mod
from scaseg.runtime.backends import open_backend
from scaseg.runtime.tensorrt import engine_info, installed as trt_installed
from scaseg.runtime.tensorrt.cuda import CudaRuntime, load_cuda, require_device
from scaseg.runtime.tensorrt.installed import TensorRT
from scaseg.runtime.tensorrt.plugin import strip_attention_into
from scaseg.runtime.tensorrt.runner import TensorRTBackend, check_input_shape
from tensorrt_models import (FACTS, attention_model, conv_model, fake_trt, heavy_loaded_by, model_info,
                             reference_attention, save, sca_function, write_side_file)


# --- import boundary --------------------------------------------------------------------------------------------


def test_tensorrt_modules_import_without_tensorrt_torch_or_cupy() -> None:
    modules = [f"scaseg.runtime.tensorrt.{m}" for m in ("runner", "cuda", "plugin", "installed", "engine_info")]
    assert heavy_loaded_by(modules) == []


def test_version_gates() -> None:
    assert trt_installed.parse_version("10.3.0.26") == (10, 3, 0, 26)
    assert trt_installed.parse_version("11.0.0.post1") == (11, 0, 0)
    with pytest.raises(ScasegError, match="cannot read the TensorRT version"):
        trt_installed.parse_version("unknown")
    assert [fake_trt(v).generation for v in ("8.5.2", "8.6.1", "10.3.0", "11.0.0")] == ["8.5", "8.5", "10.x", "11.x"]
    assert fake_trt("1.7.1.116", "rtx").generation == "rtx" and fake_trt("1.7.1.116", "rtx").label == "TensorRT-RTX 1.7.1.116"
    with pytest.raises(ScasegError, match="older than 8.5"):
        _ = fake_trt("8.2.1").generation
    assert not trt_installed.has_python_plugins(fake_trt("10.6.0")) and trt_installed.has_python_plugins(fake_trt("10.7.0"))
    assert not trt_installed.has_python_plugins(fake_trt("11.0.0", "rtx"))  # no plugins in TensorRT-RTX


def test_compute_capability_names() -> None:
    assert [engine_info.cc_text(v) for v in ("8.6", "86", "sm86", "SM_120", "12.0", (8, 9))] == [
        "8.6", "8.6", "8.6", "12.0", "12.0", "8.9"]
    with pytest.raises(ScasegError, match="cannot read the compute capability 'ampere'"):
        engine_info.cc_text("ampere")


def test_check_input_shape_static_and_profile() -> None:
    check_input_shape((1, 3, 8, 8), (1, 3, 8, 8), None, "images")
    with pytest.raises(ScasegError, match=r"built for input images of shape \(1, 3, 8, 8\)"):
        check_input_shape((2, 3, 8, 8), (1, 3, 8, 8), None, "images")
    profile = ((1, 3, 32, 32), (4, 3, 64, 64))
    check_input_shape((4, 3, 64, 32), (-1, 3, -1, -1), profile, "images")
    with pytest.raises(ScasegError, match="outside the engine's profile"):
        check_input_shape((5, 3, 64, 64), (-1, 3, -1, -1), profile, "images")
    with pytest.raises(ScasegError, match="has 4 axes"):
        check_input_shape((3, 64, 64), (-1, 3, -1, -1), profile, "images")


def test_engine_built_elsewhere_is_refused_in_one_sentence(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    write_side_file(engine, FACTS)
    info = engine_info.read_engine_info(engine)
    here: dict[str, Any] = {"trt": fake_trt("10.3.0.26"), "gpu_name": "Orin", "compute_capability": (8, 7)}
    engine_info.check_engine(engine, info, **here)  # same machine kind: fine
    engine_info.check_engine(engine, info, **{**here, "gpu_name": "  orin "})  # spacing/case are not a mismatch
    cases: list[tuple[dict[str, Any], str]] = [
        ({"trt": fake_trt("10.13.0.35")}, "built with TensorRT 10.3.0.26 and this machine has TensorRT 10.13.0.35"),
        ({"trt": fake_trt("1.7.1.116", "rtx")}, "built with TensorRT and this machine runs TensorRT-RTX 1.7.1.116"),
        ({"compute_capability": (8, 6)}, "compute capability 8.7 and this GPU (Orin) is 8.6"),
        ({"gpu_name": "NVIDIA A100-SXM4-80GB", "compute_capability": (8, 7)}, "built on a Orin and this GPU is a"),
    ]
    for change, message in cases:
        with pytest.raises(ScasegError, match=re.escape(message)) as err:
            engine_info.check_engine(engine, info, **{**here, **change})
        assert str(err.value).startswith(f"cannot run the engine {engine}") and "\n" not in str(err.value)
    write_side_file(engine, {k: v for k, v in FACTS.items() if k != "trt_version"})
    with pytest.raises(ScasegError, match="does not say which TensorRT built it"):
        engine_info.check_engine(engine, engine_info.read_engine_info(engine), **here)


def test_rtx_engine_is_refused_for_another_version_or_an_excluded_gpu(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    write_side_file(engine, {"trt_flavor": "rtx", "trt_version": "1.7.1.116", "compute_capabilities": ["8.6", "12.0"]})
    info = engine_info.read_engine_info(engine)
    here: dict[str, Any] = {"trt": fake_trt("1.7.1.116", "rtx"), "gpu_name": "RTX 4090", "compute_capability": (8, 6)}
    engine_info.check_engine(engine, info, **here)
    engine_info.check_engine(engine, info, **{**here, "compute_capability": (12, 0)})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"compute_capability": (8, 9)}, "built for compute capabilities 8.6, 12.0 and this GPU (RTX 4090) is 8.9; "
                                         "rebuild it with --compute-capability 8.9"),
        ({"trt": fake_trt("1.6.1.120", "rtx")}, "built with TensorRT-RTX 1.7.1.116 and this machine has TensorRT-RTX 1.6"),
        ({"trt": fake_trt("10.13.0", "standard")}, "built with TensorRT-RTX and this machine runs TensorRT 10.13.0; "
                                               "rebuild the engine with --tensorrt standard"),
    ]
    for change, message in cases:
        with pytest.raises(ScasegError, match=re.escape(message)) as err:
            engine_info.check_engine(engine, info, **{**here, **change})
        assert "\n" not in str(err.value)


def test_engine_side_file_missing_or_broken(tmp_path: Path) -> None:
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"plan")
    with pytest.raises(ScasegError, match="has no side file model.plan.json"):
        engine_info.read_engine_info(engine)
    engine_info.side_file(engine).write_text("{not json", encoding="utf-8")
    with pytest.raises(ScasegError, match="not valid JSON"):
        engine_info.read_engine_info(engine)


def test_runner_checks_the_side_file_before_needing_tensorrt(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ScasegError, match="has no side file"):
        TensorRTBackend(str(engine))
    with pytest.raises(ScasegError, match="model not found"):  # checked once, by open_backend
        open_backend(tmp_path / "absent.engine")
    if "standard" not in trt_installed.installed_flavors():
        write_side_file(engine, FACTS)  # built with standard TensorRT
        with pytest.raises(ScasegError, match="^TensorRT is not installed: the engine .* needs the tensorrt Python"):
            TensorRTBackend(str(engine))


def test_plugin_math_matches_softmax_attention_in_bounded_chunks() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 3, 50, 1)).astype(np.float32)
    k = rng.normal(size=(2, 3, 20, 1)).astype(np.float32)
    v = rng.normal(size=(2, 3, 20, 8)).astype(np.float32)
    logits = 0.5 * (q @ np.swapaxes(k, -1, -2))
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    expected = (weights / weights.sum(-1, keepdims=True)) @ v
    for chunk_bytes in (1, 2 * 3 * 20 * 4 * 7, 1 << 30):  # one row, 7 rows, everything at once
        out = np.full((2, 3, 50, 8), np.nan, np.float32)
        strip_attention_into(np, q, k, v, 0.5, out, chunk_bytes=chunk_bytes)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    half = np.zeros((2, 3, 50, 8), np.float16)
    strip_attention_into(np, q.astype(np.float16), k.astype(np.float16), v.astype(np.float16), 0.5, half)
    np.testing.assert_allclose(half.astype(np.float32), expected, atol=2e-2)


def test_ctypes_cuda_fallback_names_what_it_tried() -> None:
    with pytest.raises(ScasegError, match="the CUDA runtime is not available.*tried /nonexistent/libcudart.so"):
        load_cuda(["/nonexistent/libcudart.so"])


class _FakeCudart:
    """Stands in for libcudart with ``devices`` CUDA devices: what CudaRuntime calls, nothing else."""

    def __init__(self, devices: int) -> None:
        self.devices, self.selected = devices, None

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            if name == "cudaGetDeviceCount":
                args[0]._obj.value = self.devices  # the byref(c_int) CudaRuntime passes
            elif name == "cudaSetDevice":
                self.selected = args[0]
            elif name == "cudaGetErrorString":
                return b"invalid device ordinal"
            return 0

        return call


def test_require_device_selects_an_existing_device_and_refuses_others_in_one_sentence() -> None:
    lib = _FakeCudart(devices=2)
    cuda = CudaRuntime(lib)  # type: ignore[arg-type]
    require_device(cuda, 1)
    assert lib.selected == 1
    for missing in (2, -1):
        with pytest.raises(ScasegError, match=f"^CUDA device {missing} does not exist: this machine has 2 CUDA device"):
            require_device(cuda, missing)
    assert lib.selected == 1


def test_ctypes_cuda_refuses_the_first_missing_device_in_one_sentence() -> None:
    """Runs wherever libcudart loads, with or without a GPU: with N devices index N is missing, with none index 0."""
    try:
        cuda = load_cuda()
    except ScasegError:
        pytest.skip("no libcudart on this machine")
    try:
        count = cuda.device_count()
    except ScasegError:  # no driver or no device: cudaGetDeviceCount itself fails
        count = 0
    with pytest.raises(ScasegError, match="^(no CUDA GPU is present on this machine|CUDA device "
                                          f"{count} does not exist)") as err:
        require_device(cuda, count)
    assert "\n" not in str(err.value)
    if count:
        require_device(cuda, count - 1)  # the last device exists: selected without a word


def _here() -> TensorRT:
    found = trt_installed.find_tensorrt()
    assert found is not None
    return found


def _ort(model_path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_gpu_engine_matches_onnxruntime(tmp_path: Path, precision: str) -> None:
    info = model_info()
    strongly_typed_fp16 = precision == "fp16" and _here().generation in ("11.x", "rtx")
    model = conv_model(info, qdq=precision == "int8", fp16=strongly_typed_fp16)
    onnx_path = save(model, tmp_path / "model.onnx")
    engine = tmp_path / "model.engine"
    summary = engine_mod.build_engine(str(onnx_path), str(engine), precision=precision, workspace_gib=0.5,
                                      timing_cache=str(tmp_path / "timing.cache"))
    assert engine.is_file() and engine_info.side_file(engine).is_file() and (tmp_path / "timing.cache").is_file()
    assert summary["precision"] == precision and summary["plugin"] is False
    images = np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32)
    with TensorRTBackend(str(engine)) as backend:
        got = backend.infer(images)
        assert got.dtype == np.float32 and got.shape == (1, 3, 8, 8)
        again = backend.infer(images)
    atol = {"fp32": 1e-2, "fp16": 2e-2, "int8": 0.1}[precision]  # fp32 engines use TF32 on Ampere+
    np.testing.assert_allclose(got, _ort(onnx_path, images), atol=atol)
    np.testing.assert_array_equal(got, again)


@pytest.mark.gpu
def test_gpu_dynamic_profile_and_cuda_graph(tmp_path: Path) -> None:
    onnx_path = save(conv_model(model_info(), dynamic=True), tmp_path / "dyn.onnx")
    engine = tmp_path / "dyn.engine"
    engine_mod.build_engine(str(onnx_path), str(engine), min_shape=(1, 3, 8, 8), opt_shape=(2, 3, 16, 16),
                            max_shape=(4, 3, 32, 32), workspace_gib=0.5)
    rng = np.random.default_rng(3)
    with TensorRTBackend(str(engine), cuda_graph=True) as backend:
        assert backend.fixed_batch is None and backend.fixed_size is None
        for shape in [(1, 3, 8, 8), (4, 3, 32, 16), (4, 3, 32, 16), (2, 3, 16, 16)]:
            images = rng.normal(size=shape).astype(np.float32)
            np.testing.assert_allclose(backend.infer(images), _ort(onnx_path, images), atol=1e-2)
        with pytest.raises(ScasegError, match="outside the engine's profile"):
            backend.infer(np.zeros((8, 3, 8, 8), np.float32))
    backend.close()  # second close is harmless
    with pytest.raises(ScasegError, match="closed"):
        backend.infer(np.zeros((1, 3, 8, 8), np.float32))


@pytest.mark.gpu
def test_gpu_strip_attention_plugin_round_trip(tmp_path: Path) -> None:
    if not trt_installed.has_python_plugins(_here()):
        pytest.skip("the Python plugin needs TensorRT >= 10.7")
    pytest.importorskip("cupy")
    scale = 0.7
    onnx_path = save(attention_model(sca_function(), scale), tmp_path / "sca.onnx")
    engine = tmp_path / "sca.engine"
    summary = engine_mod.build_engine(str(onnx_path), str(engine), workspace_gib=0.5)
    assert summary["plugin"] is True
    images = np.random.default_rng(4).normal(size=(1, 3, 8, 8)).astype(np.float32)
    with TensorRTBackend(str(engine)) as backend:
        np.testing.assert_allclose(backend.infer(images), reference_attention(images, scale), atol=1e-4)
    with pytest.raises(ScasegError, match="CUDA graphs cannot replay the Python strip-attention plugin"):
        TensorRTBackend(str(engine), cuda_graph=True)
