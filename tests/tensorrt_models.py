"""Small ONNX models and TensorRT stand-ins for the TensorRT tests (tests/export/engine/test_export_engine.py and
tests/runtime/tensorrt/test_runtime_tensorrt.py): made with onnx.helper, no TensorRT needed.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scaseg.export.engine.graph import SCA_DOMAIN, SCA_OP
from scaseg.metadata import METADATA_KEY, ModelInfo
from scaseg.runtime.tensorrt.engine_info import FACTS_KEY, side_file
from scaseg.runtime.tensorrt.installed import TensorRT

#: What neither TensorRT package may load when it is imported: TensorRT itself, torch, onnx, CuPy, CUDA bindings.
HEAVY = ("tensorrt", "tensorrt_bindings", "tensorrt_rtx", "torch", "onnx", "cupy", "cuda")


def heavy_loaded_by(modules: list[str]) -> list[str]:
    """Import ``modules`` in a fresh interpreter; which of HEAVY that loaded (each module must have loaded too)."""
    code = "".join(f"import {m}\n" for m in modules) + "import json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert set(modules) <= loaded
    return [name for name in HEAVY if name in loaded]


#: The TensorRT facts of an fp16 engine built with TensorRT 10.3 on an Orin (compute capability 8.7).
FACTS = {"trt_flavor": "standard", "trt_version": "10.3.0.26", "gpu": "Orin", "compute_capability": [8, 7],
         "precision": "fp16"}


def fake_trt(version: str, flavor: str = "standard") -> TensorRT:
    """A TensorRT of this flavour and version without its module: enough for every rule that reads the version."""
    return TensorRT(flavor, version)


def model_info(**changes: object) -> ModelInfo:
    """A scaseg-t ModelInfo of 3 classes at 8x8, with ``changes``."""
    fields: dict = {"variant": "scaseg-t", "num_classes": 3, "input_size": (8, 8), **changes}
    return ModelInfo(**fields)


def conv_model(info: ModelInfo, *, dynamic: bool = False, qdq: bool = False, fp16: bool = False,
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


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` to ``path``; returns ``path``."""
    onnx.save(model, str(path))
    return path


def sca_function() -> onnx.FunctionProto:
    """The exporter's local function (export/sca.py): softmax(scale * q k^T) v; imports torch, hence lazy."""
    sca = pytest.importorskip("scaseg.export.sca")
    return sca.function_proto(17)


def attention_model(function: onnx.FunctionProto, scale: float) -> onnx.ModelProto:
    """images (1,3,8,8) -> q, k (1,1,64,1) and v (1,1,64,3) -> scaseg::StripCrossAttention -> output (1,3,8,8)."""
    info = model_info(sca_op="function")
    shape = lambda name, value: numpy_helper.from_array(np.array(value, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Reshape", ["images", "s_v"], ["flat"]),  # 1, 3, 64
        helper.make_node("Transpose", ["flat"], ["v"], perm=[0, 2, 1]),  # 1, 64, 3
        helper.make_node("Unsqueeze", ["v", "ax1"], ["v4"]),  # 1, 1, 64, 3
        helper.make_node("Slice", ["v4", "st0", "st1", "ax3"], ["q"]),  # channel 0 as the one-wide query
        helper.make_node("Slice", ["v4", "st1", "st2", "ax3"], ["k"]),  # channel 1 as the one-wide key
        helper.make_node(SCA_OP, ["q", "k", "v4"], ["att"], domain=SCA_DOMAIN, scale=scale),
        helper.make_node("Squeeze", ["att", "ax1"], ["att3"]),  # 1, 64, 3
        helper.make_node("Transpose", ["att3"], ["att_t"], perm=[0, 2, 1]),  # 1, 3, 64
        helper.make_node("Reshape", ["att_t", "s_out"], ["output"]),
    ]
    inits = [shape("s_v", [1, 3, 64]), shape("s_out", [1, 3, 8, 8]), shape("ax1", [1]), shape("ax3", [3]),
             shape("st0", [0]), shape("st1", [1]), shape("st2", [2])]
    graph = helper.make_graph(nodes, "sca", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(SCA_DOMAIN, 1)],
                              functions=[function])
    model.ir_version = 8
    onnx.helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    return model


def reference_attention(images: np.ndarray, scale: float) -> np.ndarray:
    """What ``attention_model`` computes, in numpy."""
    v = images.reshape(1, 3, 64).transpose(0, 2, 1)[:, None]  # 1, 1, 64, 3
    q, k = v[..., 0:1], v[..., 1:2]
    logits = scale * (q @ np.swapaxes(k, -1, -2))
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ v)[:, 0].transpose(0, 2, 1).reshape(1, 3, 8, 8)


def write_side_file(engine: Path, facts: dict, info: ModelInfo | None = None) -> Path:
    """A fake plan at ``engine`` and its side file carrying ``facts``; returns the side file."""
    info = (info or model_info()).replace(extra={FACTS_KEY: facts})
    engine.write_bytes(b"not a real plan")
    side = side_file(engine)
    side.write_text(info.to_json(), encoding="utf-8")
    return side
