"""TensorRT path: pure rules tested here, GPU round trips behind `gpu` (mypy against tensorrt-stubs: test_typecheck.py).

Nothing in the non-gpu tests imports TensorRT: they cover what can be decided without it (precision plans,
engine/GPU compatibility, profiles, ONNX preparation for the parser, the plugin's math on numpy, the ctypes CUDA
path's error handling) and the behaviour when TensorRT is missing (one sentence, nothing written).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scaseg.errors import ScasegError
from scaseg.runtime.backends import open_backend
from scaseg.metadata import METADATA_KEY, ModelInfo
from scaseg.runtime.tensorrt import builder as engine_mod, graph as trt_graph, profile as trt_profile
from scaseg.runtime.tensorrt import compat as trt_compat
from scaseg.runtime.tensorrt.compat import TensorRT
from scaseg.runtime.tensorrt.cuda import CudaRuntime, load_cuda, require_device
from scaseg.runtime.tensorrt.plugin import strip_attention_into
from scaseg.runtime.tensorrt.runner import TensorRTBackend, check_input_shape

HAS_TRT = bool(trt_compat.installed_flavors())


def _trt(version: str, flavor: str = "standard") -> TensorRT:
    return TensorRT(flavor, version)



# --- small ONNX models made here ---------------------------------------------------------------------------------


def _info(**changes: object) -> ModelInfo:
    fields: dict = {"variant": "scaseg-t", "num_classes": 3, "input_size": (8, 8), **changes}
    return ModelInfo(**fields)


def _conv_model(info: ModelInfo, *, dynamic: bool = False, qdq: bool = False, fp16: bool = False,
                seed: int = 0) -> onnx.ModelProto:
    """images (B,3,8,8) -> [Q/DQ] -> 1x1 Conv (3 -> C) -> output (B,C,8,8), with scaseg metadata."""
    rng = np.random.default_rng(seed)
    c = info.num_classes
    weight = rng.normal(size=(c, 3, 1, 1)).astype(np.float32)
    bias = rng.normal(size=(c,)).astype(np.float32)
    dims: list[str | int] = ["batch", 3, "height", "width"] if dynamic else [1, 3, 8, 8]
    out_dims: list[str | int] = ["batch", c, "height", "width"] if dynamic else [1, c, 8, 8]
    nodes, inits = [], [numpy_helper.from_array(bias, "b")]
    x = "images"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
                  numpy_helper.from_array(np.round(weight / 0.02).clip(-127, 127).astype(np.int8), "w_q"),
                  numpy_helper.from_array(np.full((c,), 0.02, np.float32), "w_scale"),
                  numpy_helper.from_array(np.zeros((c,), np.int8), "w_zero")]
        nodes += [helper.make_node("QuantizeLinear", [x, "x_scale", "x_zero"], ["x_q"]),
                  helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
                  helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0)]
        x = "x_dq"
    elif fp16:
        inits += [numpy_helper.from_array(weight.astype(np.float16), "w16")]
        nodes += [helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT)]
    else:
        inits += [numpy_helper.from_array(weight, "w")]
    nodes.append(helper.make_node("Conv", [x, "w", "b"], ["output"]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_dims)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.checker.check_model(model)
    return model


def _write(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _sca_function() -> onnx.FunctionProto:
    """The exporter's local function (export/sca.py): softmax(scale * q k^T) v; imports torch, hence lazy."""
    sca = pytest.importorskip("scaseg.export.sca")
    return sca.function_proto(17)


def _attention_model(function: onnx.FunctionProto, scale: float) -> onnx.ModelProto:
    """images (1,3,8,8) -> q, k (1,1,64,1) and v (1,1,64,3) -> scaseg::StripCrossAttention -> output (1,3,8,8)."""
    info = _info(sca_op="function")
    shape = lambda name, value: numpy_helper.from_array(np.array(value, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Reshape", ["images", "s_v"], ["flat"]),  # 1, 3, 64
        helper.make_node("Transpose", ["flat"], ["v"], perm=[0, 2, 1]),  # 1, 64, 3
        helper.make_node("Unsqueeze", ["v", "ax1"], ["v4"]),  # 1, 1, 64, 3
        helper.make_node("Slice", ["v4", "st0", "st1", "ax3"], ["q"]),  # channel 0 as the one-wide query
        helper.make_node("Slice", ["v4", "st1", "st2", "ax3"], ["k"]),  # channel 1 as the one-wide key
        helper.make_node(trt_graph.SCA_OP, ["q", "k", "v4"], ["att"], domain=trt_graph.SCA_DOMAIN, scale=scale),
        helper.make_node("Squeeze", ["att", "ax1"], ["att3"]),  # 1, 64, 3
        helper.make_node("Transpose", ["att3"], ["att_t"], perm=[0, 2, 1]),  # 1, 3, 64
        helper.make_node("Reshape", ["att_t", "s_out"], ["output"]),
    ]
    inits = [shape("s_v", [1, 3, 64]), shape("s_out", [1, 3, 8, 8]), shape("ax1", [1]), shape("ax3", [3]),
             shape("st0", [0]), shape("st1", [1]), shape("st2", [2])]
    graph = helper.make_graph(nodes, "sca", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(trt_graph.SCA_DOMAIN, 1)],
                              functions=[function])
    model.ir_version = 8
    onnx.helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    return model


def _reference_attention(images: np.ndarray, scale: float) -> np.ndarray:
    v = images.reshape(1, 3, 64).transpose(0, 2, 1)[:, None]  # 1, 1, 64, 3
    q, k = v[..., 0:1], v[..., 1:2]
    logits = scale * (q @ np.swapaxes(k, -1, -2))
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ v)[:, 0].transpose(0, 2, 1).reshape(1, 3, 8, 8)


def _side_file(engine: Path, facts: dict, info: ModelInfo | None = None) -> Path:
    info = (info or _info()).replace(extra={trt_compat.FACTS_KEY: facts})
    engine.write_bytes(b"not a real plan")
    side = trt_compat.side_file(engine)
    side.write_text(info.to_json(), encoding="utf-8")
    return side


FACTS = {"trt_flavor": "standard", "trt_version": "10.3.0.26", "gpu": "Orin", "compute_capability": [8, 7],
         "precision": "fp16"}


# --- import boundary --------------------------------------------------------------------------------------------


def test_tensorrt_modules_import_without_tensorrt_torch_or_cupy() -> None:
    code = ("import scaseg.runtime.tensorrt.runner, scaseg.runtime.tensorrt.cuda, scaseg.runtime.tensorrt.plugin, "
            "scaseg.runtime.tensorrt.builder, sys, json; print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    mods = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "scaseg.runtime.tensorrt.runner" in mods
    for heavy in ("tensorrt", "tensorrt_bindings", "tensorrt_rtx", "torch", "onnx", "cupy", "cuda"):
        assert heavy not in mods, f"importing the TensorRT runner imported {heavy}"


def test_engine_builder_imports_without_torch() -> None:
    # A Jetson builds engines from a copied ONNX without PyTorch installed.
    code = "import scaseg.runtime.tensorrt.builder, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


# --- building without TensorRT ------------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; the refusal path is for machines without it")
def test_build_engine_without_tensorrt_raises_one_sentence_and_writes_nothing(tmp_path: Path) -> None:
    onnx_path = _write(_conv_model(_info()), tmp_path / "model.onnx")
    with pytest.raises(ScasegError, match="^TensorRT is not installed: building an engine needs") as err:
        engine_mod.build_engine(str(onnx_path), str(tmp_path / "out" / "model.engine"), precision="fp16",
                                timing_cache=str(tmp_path / "out" / "timing.cache"))
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["model.onnx"]


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "int4"}, "unknown engine precision 'int4'"),
    ({"workspace_gib": 0}, "workspace must be a positive"),
    ({"dla_core": 0}, "DLA runs only fp16 or int8"),
    ({"dla_core": -1, "precision": "fp16"}, "DLA core index must be 0 or more"),
    ({"min_shape": (1, 3, 8, 8)}, "give all three of min_shape"),
    ({"min_shape": (2, 3, 8, 8), "opt_shape": (1, 3, 8, 8), "max_shape": (4, 3, 8, 8)}, "min <= opt <= max"),
    ({"min_shape": (1, 3, 8), "opt_shape": (1, 3, 8, 8), "max_shape": (1, 3, 8, 8)}, "four positive integers"),
])
def test_build_engine_rejects_bad_options_before_anything_else(tmp_path: Path, kwargs: dict, message: str) -> None:
    onnx_path = _write(_conv_model(_info()), tmp_path / "model.onnx")
    with pytest.raises(ScasegError, match=re.escape(message)):
        engine_mod.build_engine(str(onnx_path), str(tmp_path / "model.engine"), **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_load_onnx_refuses_missing_damaged_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ScasegError, match="ONNX model not found"):
        trt_graph.load_onnx(str(tmp_path / "absent.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xffnot protobuf at all" * 10)
    with pytest.raises(ScasegError, match="cannot read the ONNX model"):
        trt_graph.load_onnx(str(tmp_path / "junk.onnx"))
    foreign = _conv_model(_info())
    del foreign.metadata_props[:]
    with pytest.raises(ScasegError, match="has no scaseg metadata"):
        trt_graph.load_onnx(str(_write(foreign, tmp_path / "foreign.onnx")))
    model, info = trt_graph.load_onnx(str(_write(_conv_model(_info(num_classes=5)), tmp_path / "ok.onnx")))
    assert info.num_classes == 5 and trt_graph.input_shape(model) == ("images", (1, 3, 8, 8))


# --- precision per TensorRT generation --------------------------------------------------------------------------


def test_graph_precision_reads_what_the_onnx_carries() -> None:
    assert trt_graph.graph_precision(_conv_model(_info())) == "fp32"
    assert trt_graph.graph_precision(_conv_model(_info(), fp16=True)) == "fp16"
    assert trt_graph.graph_precision(_conv_model(_info(), qdq=True)) == "int8"


@pytest.mark.parametrize("version, precision, graph, strongly, flags", [
    ("8.5.2", "fp32", "fp32", False, ()),
    ("8.5.2", "fp16", "fp32", False, ("FP16",)),
    ("8.5.2", "fp16", "fp16", False, ("FP16",)),  # no STRONGLY_TYPED before 9/10
    ("8.5.2", "int8", "int8", False, ("INT8",)),  # 8.5 wants the flag even with Q/DQ
    ("10.3.0", "fp16", "fp32", False, ("FP16",)),
    ("10.3.0", "fp16", "fp16", True, ()),
    ("10.13.0", "int8", "int8", False, ("INT8",)),
    ("11.0.0", "fp32", "fp32", True, ()),
    ("11.0.0", "fp16", "fp16", True, ()),
    ("11.4.0", "int8", "int8", True, ()),
    ("rtx 1.7.1", "fp16", "fp16", True, ()),
    ("rtx 1.7.1", "int8", "int8", True, ()),
])
def test_precision_plan_per_generation(version, precision, graph, strongly, flags) -> None:
    trt = _trt(version.split()[-1], "rtx" if version.startswith("rtx") else "standard")
    plan = trt_compat.precision_plan(trt, precision, graph)
    assert (plan.precision, plan.strongly_typed, plan.builder_flags) == (precision, strongly, flags)


@pytest.mark.parametrize("version, precision, graph, message", [
    ("11.0.0", "fp16", "fp32", "--format engine --precision fp16 converts it first"),
    ("rtx 1.7.1", "fp16", "fp32", "TensorRT-RTX 1.7.1 builds only strongly typed networks"),
    ("10.3.0", "int8", "fp32", "pass --calib DIR"),
    ("8.5.2", "fp16", "int8", "builds only an int8 engine"),
    ("10.3.0", "fp32", "fp16", "already fp16"),
    ("10.3.0", "bf16", "fp32", "unknown engine precision"),
])
def test_precision_plan_refuses_what_a_generation_cannot_build(version, precision, graph, message) -> None:
    trt = _trt(version.split()[-1], "rtx" if version.startswith("rtx") else "standard")
    with pytest.raises(ScasegError, match=re.escape(message)):
        trt_compat.precision_plan(trt, precision, graph)


def test_version_gates() -> None:
    assert trt_compat.parse_version("10.3.0.26") == (10, 3, 0, 26)
    assert trt_compat.parse_version("11.0.0.post1") == (11, 0, 0)
    with pytest.raises(ScasegError, match="cannot read the TensorRT version"):
        trt_compat.parse_version("unknown")
    assert [_trt(v).generation for v in ("8.5.2", "8.6.1", "10.3.0", "11.0.0")] == ["8.5", "8.5", "10.x", "11.x"]
    assert _trt("1.7.1.116", "rtx").generation == "rtx" and _trt("1.7.1.116", "rtx").label == "TensorRT-RTX 1.7.1.116"
    with pytest.raises(ScasegError, match="older than 8.5"):
        _ = _trt("8.2.1").generation
    assert not trt_compat.has_python_plugins(_trt("10.6.0")) and trt_compat.has_python_plugins(_trt("10.7.0"))
    assert not trt_compat.has_python_plugins(_trt("11.0.0", "rtx"))  # no plugins in TensorRT-RTX
    assert trt_compat.needs_explicit_batch_flag(_trt("8.5.2")) and not trt_compat.needs_explicit_batch_flag(_trt("10.0"))
    assert not trt_compat.needs_explicit_batch_flag(_trt("1.7.1", "rtx"))


def test_compute_capability_names() -> None:
    assert [trt_compat.cc_text(v) for v in ("8.6", "86", "sm86", "SM_120", "12.0", (8, 9))] == [
        "8.6", "8.6", "8.6", "12.0", "12.0", "8.9"]
    with pytest.raises(ScasegError, match="cannot read the compute capability 'ampere'"):
        trt_compat.cc_text("ampere")
    assert trt_compat.check_compute_capabilities(["12.0", "86", "8.6"], ["8.6", "12.0"], "X") == ["8.6", "12.0"]
    with pytest.raises(ScasegError, match="X cannot build for compute capability 9.0: it knows 8.6, 12.0"):
        trt_compat.check_compute_capabilities(["9.0"], ["12.0", "8.6"], "X")


# --- profiles -----------------------------------------------------------------------------------------------------


def test_resolve_profile_static_dynamic_and_defaults() -> None:
    info = _info(batch=2, input_size=(64, 128))
    assert trt_profile.resolve_profile((1, 3, 8, 8), info, None) is None
    with pytest.raises(ScasegError, match="static input shape"):
        trt_profile.resolve_profile((1, 3, 8, 8), info, ((1, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8)))
    # A dynamic ONNX without a profile builds exactly the metadata's batch and size.
    assert trt_profile.resolve_profile((-1, 3, -1, -1), info, None) == ((2, 3, 64, 128),) * 3
    wanted = ((1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 128, 128))
    assert trt_profile.resolve_profile((-1, 3, -1, -1), info, wanted) == wanted
    with pytest.raises(ScasegError, match="axis 1 of the ONNX input is fixed at 3"):
        trt_profile.resolve_profile((-1, 3, -1, -1), info, ((1, 4, 8, 8),) * 3)
    with pytest.raises(ScasegError, match="does not size"):
        trt_profile.resolve_profile((-1, 3, -1, -1), _info(input_size=None), None)


def test_engine_model_info_records_ranges_and_facts() -> None:
    info = _info(input_size=(64, 64))
    ranged = engine_mod.engine_model_info(info, "fp16", ((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64)), dict(FACTS))
    assert (ranged.precision, ranged.batch, ranged.dynamic_batch, ranged.dynamic_spatial) == ("fp16", 4, True, False)
    assert ranged.input_size == (64, 64) and trt_compat.engine_facts(ranged) == FACTS
    spatial = engine_mod.engine_model_info(info, "fp32", ((1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 96, 96)), {})
    assert (spatial.dynamic_batch, spatial.dynamic_spatial) == (False, True)


def test_engine_side_file_is_what_the_triton_writer_reads(tmp_path: Path) -> None:
    triton_signature = pytest.importorskip("scaseg.export.triton_signature")
    info = engine_mod.engine_model_info(_info(input_size=(64, 64)), "fp16",
                                        ((1, 3, 64, 64), (2, 3, 64, 64), (8, 3, 64, 64)),
                                        {**FACTS, "io_dtypes": {"images": "float32", "output": "float32"},
                                         "max_batch": 8, "plugin": False})
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    trt_compat.side_file(engine).write_text(info.to_json(), encoding="utf-8")
    read, inputs, outputs = triton_signature.engine_signature(engine)
    assert read.precision == "fp16"
    assert [(s.name, s.shape) for s in inputs] == [("images", (-1, 3, 64, 64))]
    assert [(s.name, s.data_type) for s in outputs] == [("output", "TYPE_FP32")]


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


# --- engine compatibility (side file first) -----------------------------------------------------------------------


def test_engine_built_elsewhere_is_refused_in_one_sentence(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    _side_file(engine, FACTS)
    info = trt_compat.read_engine_info(engine)
    here: dict[str, Any] = {"trt": _trt("10.3.0.26"), "gpu_name": "Orin", "compute_capability": (8, 7)}
    trt_compat.check_engine(engine, info, **here)  # same machine kind: fine
    trt_compat.check_engine(engine, info, **{**here, "gpu_name": "  orin "})  # spacing/case are not a mismatch
    cases: list[tuple[dict[str, Any], str]] = [
        ({"trt": _trt("10.13.0.35")}, "built with TensorRT 10.3.0.26 and this machine has TensorRT 10.13.0.35"),
        ({"trt": _trt("1.7.1.116", "rtx")}, "built with TensorRT and this machine runs TensorRT-RTX 1.7.1.116"),
        ({"compute_capability": (8, 6)}, "compute capability 8.7 and this GPU (Orin) is 8.6"),
        ({"gpu_name": "NVIDIA A100-SXM4-80GB", "compute_capability": (8, 7)}, "built on a Orin and this GPU is a"),
    ]
    for change, message in cases:
        with pytest.raises(ScasegError, match=re.escape(message)) as err:
            trt_compat.check_engine(engine, info, **{**here, **change})
        assert str(err.value).startswith(f"cannot run the engine {engine}") and "\n" not in str(err.value)
    _side_file(engine, {k: v for k, v in FACTS.items() if k != "trt_version"})
    with pytest.raises(ScasegError, match="does not say which TensorRT built it"):
        trt_compat.check_engine(engine, trt_compat.read_engine_info(engine), **here)


def test_rtx_engine_is_refused_for_another_version_or_an_excluded_gpu(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    _side_file(engine, {"trt_flavor": "rtx", "trt_version": "1.7.1.116", "compute_capabilities": ["8.6", "12.0"]})
    info = trt_compat.read_engine_info(engine)
    here: dict[str, Any] = {"trt": _trt("1.7.1.116", "rtx"), "gpu_name": "RTX 4090", "compute_capability": (8, 6)}
    trt_compat.check_engine(engine, info, **here)
    trt_compat.check_engine(engine, info, **{**here, "compute_capability": (12, 0)})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"compute_capability": (8, 9)}, "built for compute capabilities 8.6, 12.0 and this GPU (RTX 4090) is 8.9; "
                                         "rebuild it with --compute-capability 8.9"),
        ({"trt": _trt("1.6.1.120", "rtx")}, "built with TensorRT-RTX 1.7.1.116 and this machine has TensorRT-RTX 1.6"),
        ({"trt": _trt("10.13.0", "standard")}, "built with TensorRT-RTX and this machine runs TensorRT 10.13.0; "
                                               "rebuild the engine with --tensorrt standard"),
    ]
    for change, message in cases:
        with pytest.raises(ScasegError, match=re.escape(message)) as err:
            trt_compat.check_engine(engine, info, **{**here, **change})
        assert "\n" not in str(err.value)


def test_engine_side_file_missing_or_broken(tmp_path: Path) -> None:
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"plan")
    with pytest.raises(ScasegError, match="has no side file model.plan.json"):
        trt_compat.read_engine_info(engine)
    trt_compat.side_file(engine).write_text("{not json", encoding="utf-8")
    with pytest.raises(ScasegError, match="not valid JSON"):
        trt_compat.read_engine_info(engine)


def test_runner_checks_the_side_file_before_needing_tensorrt(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ScasegError, match="has no side file"):
        TensorRTBackend(str(engine))
    with pytest.raises(ScasegError, match="model not found"):  # checked once, by open_backend
        open_backend(tmp_path / "absent.engine")
    if "standard" not in trt_compat.installed_flavors():
        _side_file(engine, FACTS)  # built with standard TensorRT
        with pytest.raises(ScasegError, match="^TensorRT is not installed: the engine .* needs the tensorrt Python"):
            TensorRTBackend(str(engine))


# --- the ONNX the parser sees ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_strip_attention_function_inlines_and_tags_for_the_plugin(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    scale = 0.7
    model = _attention_model(_sca_function(), scale)
    images = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    expected = _reference_attention(images, scale)

    def run(m: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": images})[0]

    np.testing.assert_allclose(run(model), expected, rtol=1e-5, atol=1e-6)
    # TensorRT < 10.7 path: the function body replaces the node; same numbers, no scaseg node left.
    inlined = trt_graph.inline_functions(model)
    assert not inlined.functions and not trt_graph.strip_attention_nodes(inlined)
    np.testing.assert_allclose(run(inlined), expected, rtol=1e-5, atol=1e-6)
    # TensorRT >= 10.7 path: nodes keep the function but say which plugin namespace/version to use.
    assert trt_graph.tag_for_plugin(model) == 1
    attrs = {a.name: helper.get_attribute_value(a) for a in trt_graph.strip_attention_nodes(model)[0].attribute}
    assert attrs == {"scale": pytest.approx(scale), "plugin_namespace": b"scaseg", "plugin_version": b"1"}
    assert trt_graph.tag_for_plugin(model) == 1  # idempotent: no duplicate attributes
    assert len(trt_graph.strip_attention_nodes(model)[0].attribute) == 3


@pytest.mark.slow
def test_parser_preparation_per_generation(capsys: pytest.CaptureFixture[str]) -> None:
    model = _attention_model(_sca_function(), 0.5)
    old, used = trt_graph.prepare_for_parser(onnx.ModelProto.FromString(model.SerializeToString()), _trt("10.3.0"))
    assert used is False and not old.functions and not trt_graph.strip_attention_nodes(old)
    if not HAS_TRT:  # 10.7+ but the plugin cannot be registered here: say so, then inline
        new, used = trt_graph.prepare_for_parser(model, _trt("10.13.0"))
        assert used is False and not new.functions
        assert "building without the strip-attention plugin (TensorRT is not installed" in capsys.readouterr().err


def test_network_flags_per_generation() -> None:
    from types import SimpleNamespace

    # Enum values as tensorrt-stubs 10.13 declares them: EXPLICIT_BATCH = 0, STRONGLY_TYPED = 1.
    trt = SimpleNamespace(NetworkDefinitionCreationFlag=SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1))
    weak, strong = trt_compat.PrecisionPlan("fp16", False, ("FP16",), ""), trt_compat.PrecisionPlan("fp16", True, (), "")
    assert trt_compat.network_flags(trt, _trt("8.5.2"), weak) == 1
    assert trt_compat.network_flags(trt, _trt("10.3.0"), weak) == 0
    assert trt_compat.network_flags(trt, _trt("10.3.0"), strong) == 2
    assert trt_compat.network_flags(trt, _trt("11.0.0"), strong) == 0
    assert trt_compat.network_flags(trt, _trt("1.7.1", "rtx"), strong) == 0


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


# --- CUDA access --------------------------------------------------------------------------------------------------


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


# --- on a GPU with TensorRT (skipped elsewhere) -------------------------------------------------------------------


def _here() -> TensorRT:
    found = trt_compat.find_tensorrt()
    assert found is not None
    return found


def _ort(model_path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_gpu_engine_matches_onnxruntime(tmp_path: Path, precision: str) -> None:
    info = _info()
    strongly_typed_fp16 = precision == "fp16" and _here().generation in ("11.x", "rtx")
    model = _conv_model(info, qdq=precision == "int8", fp16=strongly_typed_fp16)
    onnx_path = _write(model, tmp_path / "model.onnx")
    engine = tmp_path / "model.engine"
    summary = engine_mod.build_engine(str(onnx_path), str(engine), precision=precision, workspace_gib=0.5,
                                      timing_cache=str(tmp_path / "timing.cache"))
    assert engine.is_file() and trt_compat.side_file(engine).is_file() and (tmp_path / "timing.cache").is_file()
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
    onnx_path = _write(_conv_model(_info(), dynamic=True), tmp_path / "dyn.onnx")
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
    if not trt_compat.has_python_plugins(_here()):
        pytest.skip("the Python plugin needs TensorRT >= 10.7")
    pytest.importorskip("cupy")
    scale = 0.7
    onnx_path = _write(_attention_model(_sca_function(), scale), tmp_path / "sca.onnx")
    engine = tmp_path / "sca.engine"
    summary = engine_mod.build_engine(str(onnx_path), str(engine), workspace_gib=0.5)
    assert summary["plugin"] is True
    images = np.random.default_rng(4).normal(size=(1, 3, 8, 8)).astype(np.float32)
    with TensorRTBackend(str(engine)) as backend:
        np.testing.assert_allclose(backend.infer(images), _reference_attention(images, scale), atol=1e-4)
    with pytest.raises(ScasegError, match="CUDA graphs cannot replay the Python strip-attention plugin"):
        TensorRTBackend(str(engine), cuda_graph=True)
