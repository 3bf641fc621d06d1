"""export/simplify.py: onnxsim keeps the model's metadata and functions; LayerNorm decomposed exactly for TensorRT 8.5."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scaseg.calibration.session import first_output
from scaseg.export.simplify import decompose_layer_norm, simplify

pytest.importorskip("onnxsim")


def _layer_norm_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    shape = [1, 6, 16]
    nodes = [helper.make_node("Add", ["x", "zero"], ["x0"]),  # foldable: Add of a constant zero tensor
             helper.make_node("LayerNormalization", ["x0", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
    inits = [numpy_helper.from_array(np.zeros(shape, np.float32), "zero"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "beta")]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"scaseg": '{"variant": "t"}'})
    return model


def test_decompose_layer_norm_is_exact_and_leaves_no_layer_norm():
    model = _layer_norm_model()
    x = np.random.default_rng(1).standard_normal((1, 6, 16)).astype(np.float32) * 3 + 1
    ref = first_output(model)(x)
    assert decompose_layer_norm(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "LayerNormalization" not in ops and {"ReduceMean", "Pow", "Sqrt", "Div"} <= set(ops)
    np.testing.assert_allclose(first_output(model)(x), ref, rtol=1e-5, atol=1e-5)
    assert decompose_layer_norm(model) == 0, "nothing left to rewrite"


def test_simplify_folds_constants_and_keeps_metadata_and_functions():
    model = _layer_norm_model()
    fn = helper.make_function("scaseg", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    model.functions.append(fn)
    model.opset_import.append(helper.make_opsetid("scaseg", 1))
    out = simplify(model)
    assert "Add" not in [n.op_type for n in out.graph.node], "the constant Add is folded"
    assert {p.key: p.value for p in out.metadata_props}["scaseg"] == '{"variant": "t"}'  # onnxsim adds its own keys
    assert [f.name for f in out.functions] == ["Twice"]
