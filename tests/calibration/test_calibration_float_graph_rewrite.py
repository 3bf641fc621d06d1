"""calibration/float_graph_rewrite.py: the erf-GELU fused into one Gelu node, exactly, so the convolution before it keeps an int8 output;
the BatchNorm fold."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scaseg.calibration import int8
from scaseg.calibration.float_graph_rewrite import MS_DOMAIN, fold_batchnorm, fuse_gelu
from scaseg.calibration.ranges import collect_stats
from scaseg.calibration.session import first_output, runner


def _erf_gelu(x: str, tag: str, half: bool) -> tuple[list, str]:
    """The exporter's GELU: x * (1 + erf(x / sqrt2)), times 0.5 unless the simplifier folded it away."""
    nodes = [helper.make_node("Div", [x, "sqrt2"], [f"{tag}_d"]), helper.make_node("Erf", [f"{tag}_d"], [f"{tag}_e"]),
             helper.make_node("Add", [f"{tag}_e", "one"], [f"{tag}_a"]), helper.make_node("Mul", [x, f"{tag}_a"], [f"{tag}_m"])]
    if half:
        nodes.append(helper.make_node("Mul", [f"{tag}_m", "half"], [f"{tag}_h"]))
    return nodes, nodes[-1].output[0]


def test_gelu_rewrite_is_exact_and_frees_the_conv_before_it():
    rng = np.random.default_rng(0)
    g1, y1 = _erf_gelu("c1", "g1", half=True)
    g2, y2 = _erf_gelu("c2", "g2", half=False)  # 0.5 folded into w3
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="/net/a/Conv"), *g1,
             helper.make_node("Conv", [y1, "w2"], ["c2"], name="/net/b/Conv"), *g2,
             helper.make_node("Conv", [y2, "w3"], ["c3"], name="/net/c/Conv"), helper.make_node("Relu", ["c3"], ["y"])]
    inits = {"w1": rng.standard_normal((32, 32, 1, 1)) / 6, "w2": rng.standard_normal((32, 32, 1, 1)) / 6,
             "w3": rng.standard_normal((32, 32, 1, 1)) / 12, "sqrt2": np.array(2 ** 0.5), "one": np.array(1.0),
             "half": np.array(0.5)}
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 6, 6])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = int8.name_nodes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = rng.standard_normal((1, 32, 6, 6)).astype(np.float32)
    thresholds = {"x": 4.0, "c1": 8.0, y1: 6.0, "c2": 10.0, y2: 12.0, "c3": 20.0}
    fused, moved = int8.prepare(model, thresholds, "cpu")
    assert [n.op_type for n in fused.graph.node if n.op_type in ("Erf", "Gelu")] == ["Gelu", "Gelu"]
    np.testing.assert_allclose(first_output(fused)(x), first_output(model)(x), rtol=1e-5, atol=1e-5)
    assert moved[f"{y2}_gelu"] == pytest.approx(6.0), "the Gelu output is half the old tensor: half its range"
    assert int8.prepare(model, thresholds, "tensorrt")[0].graph.node[1].op_type == "Div", "tensorrt: untouched"
    # Spelled out, GELU reads c1 and c2 twice; fused, once: so the convs before it keep int8 outputs.
    names = int8.tensors_to_calibrate(model)
    q = int8.quantize(model, collect_stats(runner(model, names), [x], names).thresholds("minmax"), "cpu")
    assert int8.count_quantized(q)["Conv"] == 3
    assert {"c1_Q", "c2_Q"} <= {n.name for n in q.graph.node if n.op_type == "QuantizeLinear"}
    ref = first_output(model)(x)
    assert np.abs(first_output(q)(x) - ref).max() < 0.05 * np.abs(ref).max()


def _gelu_graph(half: bool, sqrt2: float = 2 ** 0.5) -> onnx.ModelProto:
    g, y = _erf_gelu("c1", "g", half=half)
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="/a/Conv"), *g,
             helper.make_node("Conv", [y, "w2"], ["out"], name="/b/Conv")]
    inits = {"w1": rng.standard_normal((8, 8, 1, 1)), "w2": rng.standard_normal((8, 8, 1, 1)), "sqrt2": np.array(sqrt2),
             "one": np.array(1.0), "half": np.array(0.5)}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 4, 4])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("half", [True, False])
def test_fuse_gelu_is_exact_and_says_which_tensor_changed_meaning(half: bool):
    model = _gelu_graph(half)
    fused, renamed = fuse_gelu(model, int8.constants(model))
    assert [n.op_type for n in fused.graph.node] == ["Conv", "Gelu", "Conv"]
    assert any(op.domain == MS_DOMAIN for op in fused.opset_import)
    x = np.random.default_rng(2).standard_normal((1, 8, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(first_output(fused)(x), first_output(model)(x), rtol=1e-5, atol=1e-5)
    # With the 0.5 folded into the next weights, the Gelu output is half the old tensor (and gets a new name).
    assert renamed == ({} if half else {"g_m_gelu": ("g_m", 0.5)})
    assert len(model.graph.node) == (7 if half else 6), "the input model is left as it was"


def test_fuse_gelu_leaves_other_patterns_alone():
    model = _gelu_graph(True, sqrt2=2.0)  # x * (1 + erf(x / 2)) is not GELU
    fused, renamed = fuse_gelu(model, int8.constants(model))
    assert [n.op_type for n in fused.graph.node] == [n.op_type for n in model.graph.node] and renamed == {}


def _mscan_block(pad_fc1: bool = False):
    """x -> y = x + ls * (BN1(x) + p2(p1(BN1(x)))) -> z = y + f1(BN2(y)): MSCAN's pre-norm block, shrunk."""
    rng = np.random.default_rng(3)
    c = 8

    def bn(tag: str) -> list:
        return [(f"{tag}_s", rng.uniform(0.5, 2, c)), (f"{tag}_b", rng.standard_normal(c)),
                (f"{tag}_m", rng.standard_normal(c)), (f"{tag}_v", rng.uniform(0.5, 2, c))]

    inits = dict(bn("n1") + bn("n2"))
    for k in ("p1", "p2", "f1"):
        inits[f"{k}_w"] = rng.standard_normal((c, c, 1, 1)) / 3
        inits[f"{k}_c"] = rng.standard_normal(c)
    inits["ls"] = rng.uniform(0.1, 1, (c, 1, 1))
    pads = {"pads": [1, 1, 1, 1], "kernel_shape": [1, 1]} if pad_fc1 else {}
    nodes = [helper.make_node("BatchNormalization", ["x", "n1_s", "n1_b", "n1_m", "n1_v"], ["n1"], name="/b/norm1"),
             helper.make_node("Conv", ["n1", "p1_w", "p1_c"], ["p1"], name="/b/p1"),
             helper.make_node("Conv", ["p1", "p2_w", "p2_c"], ["p2"], name="/b/p2"),
             helper.make_node("Add", ["n1", "p2"], ["a"], name="/b/attn_add"),
             helper.make_node("Mul", ["ls", "a"], ["s"], name="/b/ls"),
             helper.make_node("Add", ["x", "s"], ["y"], name="/b/add"),
             helper.make_node("BatchNormalization", ["y", "n2_s", "n2_b", "n2_m", "n2_v"], ["n2"], name="/b/norm2"),
             helper.make_node("Conv", ["n2", "f1_w", "f1_c"], ["f1"], name="/b/fc1", **pads),
             helper.make_node("Add", ["y", "f1"] if not pad_fc1 else ["f1", "f1"], ["z"], name="/b/add1")]
    shape = [1, c, 6, 6]
    out_shape = [1, c, 8, 8] if pad_fc1 else shape
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fold_batchnorm_removes_both_norms_exactly():
    model = _mscan_block()
    folded = fold_batchnorm(model, int8.constants(model))
    ops = [n.op_type for n in folded.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Add") == 2 and ops.count("Mul") == 1, ops
    x = np.random.default_rng(4).standard_normal((1, 8, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(first_output(folded)(x), first_output(model)(x), rtol=1e-4, atol=1e-4)
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) == 2, "the input model is left as it was"
    # The convolutions now read the residual stream itself, and a placement with fold_bn quantizes it there.
    assert {"x", "y"} <= {n.input[0] for n in folded.graph.node if n.op_type == "Conv"}


def test_fold_batchnorm_leaves_a_norm_with_a_reader_it_cannot_fold_into():
    model = _mscan_block(pad_fc1=True)  # a padded 1x1 conv: folding the BN bias into it would be wrong at the border
    folded = fold_batchnorm(model, int8.constants(model))
    norms = [n.name for n in folded.graph.node if n.op_type == "BatchNormalization"]
    assert norms == ["/b/norm2"]
    x = np.random.default_rng(5).standard_normal((1, 8, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(first_output(folded)(x), first_output(model)(x), rtol=1e-4, atol=1e-4)

