"""TensorRT lint: the real parser where TensorRT imports, and the hand-typed fallback tables (op / opset / dtype /
restrictions per generation) where it does not. Exports are checked against the parser in
tests/export/engine/test_trt_build.py."""
from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scaseg.export.sca import function_proto
from scaseg.export.trt_lint import SUPPORT, TARGETS, lint, lint_tables
from scaseg.runtime.tensorrt import installed


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def graph(nodes, inputs, outputs, opset=17, initializers=(), functions=(), domains=()):  # type: ignore[no-untyped-def]
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(g, opset_imports=imports, functions=list(functions))


def vi(name, dtype=TensorProto.FLOAT, shape=(1, 4, 8)):  # type: ignore[no-untyped-def]
    return helper.make_tensor_value_info(name, dtype, list(shape))


def targets_with(report, op):  # type: ignore[no-untyped-def]
    return sorted({f.target for f in report.findings if f.op == op})


def test_layer_normalization_is_refused_by_85_only() -> None:
    scale = numpy_helper.from_array(np.ones(8, np.float32), "s")
    m = graph([helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=-1)], [vi("x")], [vi("y")], initializers=[scale])
    assert targets_with(lint_tables(m), "LayerNormalization") == ["8.5"]


def test_opset_range_per_target() -> None:
    m = graph([helper.make_node("Relu", ["x"], ["y"])], [vi("x")], [vi("y")], opset=21)
    assert targets_with(lint_tables(m), "opset") == ["10.x", "8.5"]
    assert lint_tables(graph([helper.make_node("Relu", ["x"], ["y"])], [vi("x")], [vi("y")], opset=17)).clean()


def test_dtype_outside_the_table_is_reported() -> None:
    # Abs on int8 is in no table; Abs on int64 is cast to int32 by 8.5 and native from 10.x.
    m8 = graph([helper.make_node("Abs", ["x"], ["y"])], [vi("x", TensorProto.INT8)], [vi("y", TensorProto.INT8)])
    assert targets_with(lint_tables(m8), "Abs") == sorted(TARGETS)
    m64 = graph([helper.make_node("Abs", ["x"], ["y"])], [vi("x", TensorProto.INT64)], [vi("y", TensorProto.INT64)])
    assert lint_tables(m64).clean()


def test_unsupported_op_and_restrictions() -> None:
    roi = numpy_helper.from_array(np.array([], np.float32), "roi")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    cubic = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="cubic")
    m = graph([cubic], [vi("x", shape=(1, 1, 4, 4))], [vi("y", shape=(1, 1, 8, 8))], initializers=[roi, scales])
    assert targets_with(lint_tables(m), "Resize") == sorted(TARGETS)
    hard = graph([helper.make_node("StringNormalizer", ["x"], ["y"])], [vi("x", TensorProto.STRING, (3,))], [vi("y", TensorProto.STRING, (3,))])
    assert targets_with(lint_tables(hard), "StringNormalizer") == sorted(TARGETS)
    # Slice axes computed at run time: TensorRT 8.5 needs them as an initializer.
    consts = [numpy_helper.from_array(np.array([0], np.int64), n) for n in ("st", "en")]
    nodes = [helper.make_node("Shape", ["x"], ["shp"]), helper.make_node("Slice", ["shp", "st", "en"], ["ax"]),
             helper.make_node("Sub", ["ax", "ax"], ["axes"]), helper.make_node("Slice", ["x", "st", "en", "axes"], ["y"])]
    m = graph(nodes, [vi("x")], [vi("y", shape=(0, 4, 8))], initializers=consts)
    assert targets_with(lint_tables(m), "Slice") == ["8.5"]


def test_custom_ops_and_local_functions() -> None:
    inputs = [vi("q", shape=(1, 1, 6, 1)), vi("k", shape=(1, 1, 3, 1)), vi("v", shape=(1, 1, 3, 4))]
    node = helper.make_node("StripCrossAttention", ["q", "k", "v"], ["out"], domain="scaseg", scale=0.5)
    out = [vi("out", shape=(1, 1, 6, 4))]
    with_fn = lint_tables(graph([node], inputs, out, functions=[function_proto(17)], domains=["scaseg"]))
    assert targets_with(with_fn, "scaseg:StripCrossAttention") == ["8.5"] and with_fn.notes
    without = lint_tables(graph([node], inputs, out, domains=["scaseg"]))
    assert targets_with(without, "scaseg:StripCrossAttention") == sorted(TARGETS)


def test_tables_reflect_the_documented_generations() -> None:
    assert "LayerNormalization" not in SUPPORT["8.5"] and "LayerNormalization" in SUPPORT["10.x"]
    assert "Attention" not in SUPPORT["10.x"] and "Attention" in SUPPORT["11.x"] and "Swish" in SUPPORT["11.x"]
    assert SUPPORT["8.5"]["ConstantOfShape"] == {"FP32"}


@pytest.mark.skipif(installed.find_tensorrt() is None, reason="no TensorRT importable here")
def test_the_parser_reports_its_own_errors_and_says_it_was_used() -> None:
    inputs = [vi("q", shape=(1, 1, 6, 1)), vi("k", shape=(1, 1, 3, 1)), vi("v", shape=(1, 1, 3, 4))]
    node = helper.make_node("StripCrossAttention", ["q", "k", "v"], ["out"], domain="scaseg", name="sca0", scale=0.5)
    report = lint(graph([node], inputs, [vi("out", shape=(1, 1, 6, 4))], domains=["scaseg"]))
    assert report.source == "parser" and not report.clean()
    assert "node sca0 (StripCrossAttention)" in report.findings[0].problem, report.summary()
    assert report.summary().startswith(f"{installed.find_tensorrt().label} ONNX parser (the real one): 1 error(s)")
    ok = lint(graph([helper.make_node("Relu", ["x"], ["y"])], [vi("x")], [vi("y")]))
    assert ok.source == "parser" and ok.clean() and "parsed cleanly" in ok.summary()
    fallback = lint(graph([helper.make_node("Relu", ["x"], ["y"])], [vi("x")], [vi("y")]), use_parser=False)
    assert fallback.source == "tables" and "hand-typed operator tables" in fallback.summary()
