"""scaseg.calibration.fp16 on hand-built graphs: the near-overflow rule and its edge, the Cast round trips it joins,
what stays fp32 (a real export through make_precision: test_calibration_fp16.py)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from scaseg.calibration.session import first_output
from scaseg.calibration.fp16 import FP16_MAX, HEADROOM, _drop_cast_round_trips, _float_outputs, near_overflow, to_fp16


def _model(nodes: list, inits: list, out_type: int = TensorProto.FLOAT, out_shape=None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("out", out_type, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _const(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def _scaled_mean(scale: float) -> onnx.ModelProto:
    """x * scale -> ReduceMean over W: the product can leave fp16's range, the mean is kept fp32 anyway."""
    return _model([helper.make_node("Mul", ["x", "k"], ["big"], name="scale"),
                   helper.make_node("ReduceMean", ["big"], ["out"], name="mean", axes=[3], keepdims=1)],
                  [_const("k", scale)])


def test_a_node_is_near_overflow_from_half_the_fp16_limit() -> None:
    model = _scaled_mean(1.0)
    limit = FP16_MAX / HEADROOM
    assert near_overflow(model, [np.full((1, 2, 4, 4), limit, np.float32)]) == ["mean", "scale"]
    assert near_overflow(model, [np.full((1, 2, 4, 4), limit * 0.99, np.float32)]) == []
    # The peak is over every batch and over both signs.
    batches = [np.zeros((1, 2, 4, 4), np.float32), np.full((1, 2, 4, 4), -limit, np.float32)]
    assert near_overflow(model, batches) == ["mean", "scale"]


def test_float_outputs_skip_constants_and_integer_tensors() -> None:
    model = _model([helper.make_node("Constant", [], ["c"], value=_const("v", 2.0)),
                    helper.make_node("Mul", ["x", "c"], ["y"], name="mul"),
                    helper.make_node("Shape", ["y"], ["out"], name="shape")], [], TensorProto.INT64, [4])
    assert _float_outputs(model) == {"y": "mul"}


def test_a_measured_hot_node_stays_fp32_and_the_result_stays_finite() -> None:
    # x * 1e5 (beyond 65504: inf in fp16) -> ReduceMean -> Sqrt (both kept fp32 by op type) -> about 300.
    model = _model([helper.make_node("Mul", ["x", "k"], ["big"], name="scale"),
                    helper.make_node("ReduceMean", ["big"], ["mean_out"], name="mean", axes=[3], keepdims=1),
                    helper.make_node("Sqrt", ["mean_out"], ["out"], name="root")], [_const("k", 1e5)])
    x = np.random.default_rng(0).uniform(0.5, 1.0, (1, 2, 4, 4)).astype(np.float32)
    fp16, report = to_fp16(model, [x])
    assert report.kept_fp32_nodes == ["mean", "scale"] and report.kept_fp32_ops == ["ReduceMean", "Sqrt"]
    assert report.images == 1 and report.argmax_agreement == 1.0
    assert report.max_abs_error < 0.5  # of values near 300: only the fp32 output's own fp16 rounding
    # The three fp32 nodes are joined directly, with no Cast(fp16) -> Cast(fp32) between them.
    producer = {o: n.op_type for n in fp16.graph.node for o in n.output}
    chain = {n.op_type: producer.get(n.input[0]) for n in fp16.graph.node if n.op_type in ("ReduceMean", "Sqrt")}
    assert chain == {"ReduceMean": "Mul", "Sqrt": "ReduceMean"}
    assert fp16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    # Measured on a batch where nothing is hot, the scale goes fp16 (clipped to 65504) and the result is wrong.
    unguarded, _ = to_fp16(model, [np.zeros_like(x)])
    reference = first_output(model)(x)
    assert np.abs(first_output(unguarded)(x) - reference).max() > 20 > np.abs(first_output(fp16)(x) - reference).max()


def test_an_unmeasured_batch_leaves_the_node_to_fp16() -> None:
    model = _scaled_mean(1e5)
    fp16, report = to_fp16(model, [np.full((1, 2, 4, 4), 1e-3, np.float32)])
    assert report.kept_fp32_nodes == []
    assert any(i.data_type == TensorProto.FLOAT16 for i in fp16.graph.initializer)  # the scale went fp16


def test_labels_outputs_compare_labels_and_report_no_logit_error() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                    helper.make_node("ArgMax", ["r"], ["out"], name="argmax", axis=1, keepdims=0)],
                   [], TensorProto.INT64, [1, 4, 4])
    x = np.random.default_rng(1).standard_normal((1, 2, 4, 4)).astype(np.float32)
    _, report = to_fp16(model, [x], output_kind="labels")
    assert report.max_abs_error == 0.0 and report.argmax_agreement == 1.0


def test_cast_round_trips_are_joined_except_at_a_graph_output() -> None:
    to16, to32 = TensorProto.FLOAT16, TensorProto.FLOAT
    model = _model([helper.make_node("Cast", ["x"], ["h"], name="down", to=to16),
                    helper.make_node("Cast", ["h"], ["f"], name="up", to=to32),
                    helper.make_node("Relu", ["f"], ["out"], name="relu")], [])
    _drop_cast_round_trips(model)
    assert [n.name for n in model.graph.node] == ["relu"] and list(model.graph.node[0].input) == ["x"]
    kept = _model([helper.make_node("Cast", ["x"], ["h"], name="down", to=to16),
                   helper.make_node("Cast", ["h"], ["out"], name="up", to=to32)], [])
    _drop_cast_round_trips(kept)
    assert [n.name for n in kept.graph.node] == ["down", "up"]  # the output keeps its name and its producer


def test_the_limit_is_fp16s_largest_value_and_the_headroom_a_factor_of_two() -> None:
    assert FP16_MAX == float(np.finfo(np.float16).max) and HEADROOM == 2.0
