"""calibration/qdq_graph_rewrite.py on graphs placed by int8.quantize("cpu"): GELU and residual Adds in ORT's int8 kernels."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scaseg.calibration import int8
from scaseg.calibration.float_graph_rewrite import MS_DOMAIN
from scaseg.calibration.qdq_graph_rewrite import SIGMOID_GELU, int8_gelu, int8_residual_add
from scaseg.calibration.session import first_output, make_session, runner

C = 32  # the cpu placement quantizes convs with >= 32 input features
EYE = np.eye(C, dtype=np.float32).reshape(C, C, 1, 1)  # quantizes exactly: 7-bit weights of 63


def _fused_ops(model: onnx.ModelProto, tmp_path) -> list[str]:
    make_session(model, optimized_path=str(tmp_path / "opt.onnx"))
    return [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]


def _int8_gelu_model(float_reader: bool) -> onnx.ModelProto:
    """Identity 1x1 conv -> Gelu -> identity 1x1 conv -> Neg (the convs quantize exactly: 7-bit weights of 63);
    with ``float_reader`` the Gelu is also read by a Relu (a float op), so its output cannot stay in the int8 chain."""
    c, eye = C, EYE
    nodes = [helper.make_node("Conv", ["x", "eye"], ["a"], name="/a/Conv"),
             helper.make_node("Gelu", ["a"], ["g"], name="/g/Gelu", domain=MS_DOMAIN),
             helper.make_node("Conv", ["g", "eye"], ["b"], name="/b/Conv"),
             helper.make_node("Neg", ["b"], ["out"], name="/n/Neg")]  # a graph output stays float: b is int8
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, c, 8, 8])]
    if float_reader:
        nodes.append(helper.make_node("Relu", ["g"], ["r"], name="/r/Relu"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, c, 8, 8]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])],
                              outputs, [numpy_helper.from_array(eye, "eye")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS_DOMAIN, 1)])


def _gelu(v: np.ndarray) -> np.ndarray:
    from math import erf, sqrt
    return 0.5 * v * (1.0 + np.vectorize(erf)(v / sqrt(2.0)))


@pytest.mark.parametrize("float_reader", [False, True])
def test_int8_gelu_runs_in_ort_int8_kernels_within_one_level_of_the_sigmoid_form(float_reader: bool, tmp_path):
    model = _int8_gelu_model(float_reader)
    thresholds = {"x": 6.35, "a": 6.35, "g": 6.35, "b": 6.35}  # scale 0.05: inputs -6.35 .. 6.35 are levels
    q = int8.quantize(model, thresholds, "cpu")
    assert int8.count_quantized(q) == {"Conv": 2, "Gelu": 1}
    ops = [n.op_type for n in q.graph.node]
    assert "Gelu" not in ops and ops.count("Sigmoid") == 1 and ops.count("Mul") == 1
    # ORT fuses the rewrite into its int8 kernels: no float GELU, sigmoid or product is left.
    fused = _fused_ops(q, tmp_path)
    assert fused.count("QLinearSigmoid") == 1 and fused.count("QLinearMul") == 1 and fused.count("QLinearConv") == 2
    assert not {"Gelu", "Sigmoid", "Mul"} & set(fused)
    # Values: every input level, through the fused graph. The result is x * sigmoid(1.702 x) on the quantized input,
    # rounded to the output's level (0.05) and the sigmoid's (1/255): within one level of that, and within that
    # plus the sigmoid form's own error (0.0203) of the exact GELU.
    levels = np.arange(-127, 128, dtype=np.float32) * np.float32(0.05)
    x = np.resize(levels, (1, 32, 8, 8)).astype(np.float32)
    out = -first_output(q)(x)
    sig_form = x / (1.0 + np.exp(-SIGMOID_GELU * x))
    assert np.abs(out - sig_form).max() <= 0.05 + 1e-4
    assert np.abs(out - _gelu(x)).max() <= 0.05 + 0.0204
    if float_reader:
        relu = runner(q, ["r"])(x)["r"]
        np.testing.assert_allclose(relu, np.maximum(out, 0.0), atol=1e-6)  # the float reader sees the same values
    # A Gelu whose input is not quantized (its conv kept float) is left as it was.
    kept = int8.quantize(model, thresholds, "cpu", keep_float=["/a/Conv"])
    assert [n.op_type for n in kept.graph.node].count("Gelu") == 1 and "Gelu" not in int8.count_quantized(kept)
    again, changed = int8_gelu(q)
    assert changed == 0 and len(again.graph.node) == len(q.graph.node), "a rewritten graph has nothing left to rewrite"



def _residual_model() -> onnx.ModelProto:
    """y1 = x + conv_a(x); y2 = y1 + conv_c(y1); out = -conv_b(y2): two residual Adds in a row, as in MSCAN."""
    nodes = [helper.make_node("Conv", ["x", "eye"], ["a"], name="/a/Conv"),
             helper.make_node("Add", ["x", "a"], ["y1"], name="/add1/Add"),
             helper.make_node("Conv", ["y1", "half"], ["c"], name="/c/Conv"),
             helper.make_node("Add", ["y1", "c"], ["y2"], name="/add2/Add"),
             helper.make_node("Conv", ["y2", "eye"], ["b"], name="/b/Conv"),
             helper.make_node("Neg", ["b"], ["out"], name="/n/Neg")]
    graph = helper.make_graph(nodes, "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, C, 8, 8])],
                              [numpy_helper.from_array(EYE, "eye"), numpy_helper.from_array(EYE * 0.5, "half")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_int8_residual_adds_run_as_qlinearadd_and_the_stream_between_them_is_quantized_once(tmp_path):
    model = _residual_model()
    assert {"x", "y1", "y2", "a", "c"} <= set(int8.tensors_to_calibrate(model)), "Add inputs and outputs calibrate"
    thresholds = {"x": 3.0, "a": 3.0, "y1": 6.0, "c": 3.0, "y2": 9.0, "b": 9.0}
    q = int8.quantize(model, thresholds, "cpu")
    assert int8.count_quantized(q) == {"Conv": 3, "Add": 2}
    fused = _fused_ops(q, tmp_path)
    assert fused.count("QLinearAdd") == 2 and "Add" not in fused and fused.count("QLinearConv") == 3
    # The stream stays uint8 from the input's Q to the last conv's DQ: ORT drops the placement's requantization of
    # each Add output (same scale) before the conv reading it; the Q nodes left quantize x (for conv_a, the Add).
    assert fused.count("QuantizeLinear") == 2 and fused.count("DequantizeLinear") == 1
    # Values: within a few output levels (9 / 127) of the float graph.
    x = np.random.default_rng(0).uniform(-3.0, 3.0, (1, C, 8, 8)).astype(np.float32)
    exact = first_output(model)(x)
    assert np.abs(first_output(q)(x) - exact).max() < 3 * 9.0 / 127
    # Without thresholds for the Add's other input and output it stays a float Add.
    partial = int8.quantize(model, {k: v for k, v in thresholds.items() if k not in ("y1", "y2")}, "cpu")
    assert "Add" not in int8.count_quantized(partial)
    again, changed = int8_residual_add(q, thresholds)
    assert changed == 0, "a rewritten graph has nothing left to rewrite"


def test_a_tensor_added_to_two_int8_outputs_gets_one_pair(tmp_path):
    """x + conv_a(x) and x + conv_c(x): one Q/DQ pair on x serves both QLinearAdds (no duplicate node names)."""
    nodes = [helper.make_node("Conv", ["x", "eye"], ["a"], name="/a/Conv"),
             helper.make_node("Conv", ["x", "eye"], ["c"], name="/c/Conv"),
             helper.make_node("Add", ["x", "a"], ["y1"], name="/add1/Add"),
             helper.make_node("Add", ["x", "c"], ["y2"], name="/add2/Add"),
             helper.make_node("Concat", ["y1", "y2"], ["y"], axis=1, name="/cat/Concat"),
             helper.make_node("Conv", ["y", "eye2"], ["b"], name="/b/Conv"),
             helper.make_node("Neg", ["b"], ["out"], name="/n/Neg")]
    eye2 = np.concatenate([EYE, EYE], axis=1) * 0.5
    graph = helper.make_graph(nodes, "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, C, 8, 8])],
                              [numpy_helper.from_array(EYE, "eye"), numpy_helper.from_array(eye2, "eye2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    thresholds = {"x": 3.0, "a": 3.0, "c": 3.0, "y1": 6.0, "y2": 6.0, "y": 6.0, "b": 6.0}
    q = int8.quantize(model, thresholds, "cpu")
    assert int8.count_quantized(q)["Add"] == 2
    assert [n.name for n in q.graph.node].count("x_add_in_Q") == 1
    assert _fused_ops(q, tmp_path).count("QLinearAdd") == 2
    x = np.random.default_rng(1).uniform(-3.0, 3.0, (1, C, 8, 8)).astype(np.float32)
    assert np.abs(first_output(q)(x) - first_output(model)(x)).max() < 3 * 6.0 / 127
