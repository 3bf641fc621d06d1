"""Rewrites of a placed Q/DQ graph (the ``cpu`` placement) that keep more of it in ONNX Runtime's int8 kernels.

ONNX Runtime CPU runs an op in int8 only where it has a QLinear kernel and the op sits between DQ and Q nodes;
each float op between two int8 ones costs a dequantize pass, a quantize pass and, around its NHWC int8 kernels,
transposes. Two ops of MSCAN have no such form in the exported graph and break every block's int8 chains:

- ``int8_gelu``: GELU (no int8 kernel) becomes ``x * sigmoid(1.702 x)`` on the quantized input, fused by ORT into
  QLinearSigmoid + QLinearMul;
- ``int8_residual_add``: the residual Adds after an int8 op get pairs on their other input and their output, so
  ORT runs QLinearAdd and the residual stream stays uint8 between blocks.

Both write uint8 pairs with zero point 128 where a quantized tensor has several readers: the same levels as the
placement's symmetric int8 (zero point 0), which ORT converts to uint8 only where a Q feeds one DQ.
Measured in docs/precision.md (benchmarks/bench_int8_cpu.py, bench_int8_gelu.py).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from scaseg.calibration.float_graph_rewrite import MS_DOMAIN

#: GELU(x) ~= x * sigmoid(SIGMOID_GELU * x) (Hendrycks & Gimpel's sigmoid form); largest error 0.0203, at x = -2.27.
SIGMOID_GELU = 1.702


def _copy_with_edges(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, onnx.NodeProto],
                                                        dict[str, list[onnx.NodeProto]]]:
    """A copy of ``model`` and, for its nodes, tensor -> producing node and tensor -> reading nodes."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    producer = {o: n for n in out.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in out.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return out, producer, consumers


def _add_initializers(graph: onnx.GraphProto, values: dict[str, np.ndarray]) -> None:
    """Add ``values`` as initializers, skipping names the graph has (the rewrites share their zero points)."""
    have = {i.name for i in graph.initializer}
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in values.items() if k not in have)


def int8_gelu(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Return a copy of a Q/DQ ``model`` whose GELUs on a quantized input run as int8 ops, and how many changed.

    ONNX Runtime has no int8 GELU, so ``Q -> DQ -> Gelu`` costs a dequantize pass, a float GELU and (where the next
    op is int8) a quantize pass over the tensor. Rewritten, for each such Gelu (its input a private Q -> DQ pair):
    ``DQ(x, s) * DQ(Q(sigmoid(DQ(x, 1.702 s)), 1/255))`` (SIGMOID_GELU; sigmoid's output quantized to uint8 steps of
    1/255 on [0, 1]), which ORT fuses into QLinearSigmoid (a 256-entry table) and QLinearMul. The quantized input
    feeds two DQs, so it is written as uint8 with zero point 128 (the same levels as int8 with zero point 0; ORT
    converts int8 pairs to uint8 only where a Q feeds one DQ). Where the Gelu output was float (read by float ops),
    the product gets a uint8 pair of its own with the input's scale (GELU(x) lies in [-0.17, max(x, 0)]), so the
    Mul is int8 too. Gelus without a quantized input (kept float by the guard, or the stem's) are left alone.
    """
    out, producer, consumers = _copy_with_edges(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}

    def scalar(name: str) -> Optional[np.ndarray]:
        return numpy_helper.to_array(inits[name]) if name in inits and not inits[name].dims else None

    zero_u8, zero_sig, sig_scale = "scaseg_qdq_zero_uint8", "scaseg_qdq_zero_uint8_0", "scaseg_qdq_sigmoid_scale"
    new_inits: dict[str, np.ndarray] = {}
    replaced: dict[str, list[onnx.NodeProto]] = {}
    for gelu in graph.node:
        if gelu.op_type != "Gelu" or gelu.domain != MS_DOMAIN or gelu.output[0] in outputs:
            continue
        dq = producer.get(gelu.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or len(consumers.get(dq.output[0], [])) != 1:
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        scale, zp = scalar(q.input[1]), scalar(q.input[2]) if len(q.input) > 2 else None
        if (consumers.get(q.output[0]) != [dq] or scale is None or zp is None or zp.dtype != np.int8 or int(zp)
                or dq.input[1:3] != q.input[1:3]):
            continue
        new_inits[zero_u8] = np.array(128, np.uint8)
        new_inits[zero_sig] = np.array(0, np.uint8)
        new_inits[sig_scale] = np.array(1.0 / 255.0, np.float32)
        tag = gelu.name or gelu.output[0]
        new_inits[f"{tag}_sigmoid_in_scale"] = np.array(float(scale) * SIGMOID_GELU, np.float32)
        q.input[2] = dq.input[2] = zero_u8
        x_q = q.output[0]
        users = consumers.get(gelu.output[0], [])
        float_out = not (len(users) == 1 and users[0].op_type == "QuantizeLinear")
        product = f"{tag}_product" if float_out else gelu.output[0]
        nodes = [
            helper.make_node("DequantizeLinear", [x_q, f"{tag}_sigmoid_in_scale", zero_u8], [f"{tag}_sigmoid_in"],
                             name=f"{tag}_sigmoid_DQ"),
            helper.make_node("Sigmoid", [f"{tag}_sigmoid_in"], [f"{tag}_sigmoid"], name=f"{tag}_sigmoid"),
            helper.make_node("QuantizeLinear", [f"{tag}_sigmoid", sig_scale, zero_sig], [f"{tag}_sigmoid_q"],
                             name=f"{tag}_sigmoid_Q"),
            helper.make_node("DequantizeLinear", [f"{tag}_sigmoid_q", sig_scale, zero_sig], [f"{tag}_sigmoid_dq"],
                             name=f"{tag}_sigmoid_out_DQ"),
            helper.make_node("Mul", [dq.output[0], f"{tag}_sigmoid_dq"], [product], name=f"{tag}_mul"),
        ]
        if float_out:
            nodes += [
                helper.make_node("QuantizeLinear", [product, q.input[1], zero_u8], [f"{product}_q"], name=f"{tag}_Q"),
                helper.make_node("DequantizeLinear", [f"{product}_q", q.input[1], zero_u8], [gelu.output[0]],
                                 name=f"{tag}_DQ"),
            ]
        replaced[gelu.output[0]] = nodes
    if not replaced:
        return out, 0
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        kept.extend(replaced.get(node.output[0], [node]) if node.op_type == "Gelu" else [node])
    del graph.node[:]
    graph.node.extend(kept)
    _add_initializers(graph, new_inits)
    return out, len(replaced)


def int8_residual_add(model: onnx.ModelProto, thresholds: dict[str, float]) -> tuple[onnx.ModelProto, int]:
    """Return a copy of a Q/DQ ``model`` whose residual Adds after an int8 op run in int8 too, and how many changed.

    An ``Add(DQ(Q(conv output)), r)`` with ``r`` float is a float Add on ONNX Runtime, whose layout pass then also
    wraps the conv's dequantized NHWC output in a float transpose and a Q/DQ pair of its own. With a pair on ``r``
    and on the Add's output (uint8, zero point 128: these tensors have several readers), ORT runs it as QLinearAdd,
    and the residual stream between two such Adds stays uint8. Thresholds (symmetric clipping ranges, as
    int8.quantize takes them) must cover ``r`` and the output; an Add without them is left alone. Where ``r`` is the
    output of another rewritten Add, it is already dequantized and gets no second pair.
    """
    out, producer, consumers = _copy_with_edges(model)
    graph = out.graph
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    outputs = {o.name for o in graph.output}

    def int8_output(name: str) -> bool:
        """``name`` is the DQ of a private pair on the output of an int8 op (a Q/DQ'd weighted op)."""
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or len(consumers.get(name, [])) != 1:
            return False
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or consumers.get(q.output[0]) != [dq]:
            return False
        op = producer.get(q.input[0])
        return op is not None and op.op_type in ("Conv", "MatMul", "Gemm")

    adds = []
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2 or any(i in consts for i in node.input):
            continue
        quantized = [i for i in node.input if int8_output(i)]
        if len(quantized) != 1 or node.output[0] in outputs:
            continue
        other = next(i for i in node.input if i != quantized[0])
        if other in thresholds and node.output[0] in thresholds:
            adds.append((node, other))
    if not adds:
        return out, 0
    rewritten = {n.output[0] for n, _ in adds}
    zero = "scaseg_qdq_zero_uint8"
    new_inits = {zero: np.array(128, np.uint8)}

    def pair(tensor: str, tag: str, dequantized: str, threshold: float) -> list[onnx.NodeProto]:
        scale = f"{tag}_scale"
        new_inits[scale] = np.array(float(threshold) / 127.0, np.float32)
        return [helper.make_node("QuantizeLinear", [tensor, scale, zero], [f"{tag}_q"], name=f"{tag}_Q"),
                helper.make_node("DequantizeLinear", [f"{tag}_q", scale, zero], [dequantized], name=f"{tag}_DQ")]

    around: dict[str, tuple[list[onnx.NodeProto], list[onnx.NodeProto]]] = {}  # Add's new output -> pairs
    paired: set[str] = set()  # inputs given a pair (one pair serves every rewritten Add reading the tensor)
    for node, other in adds:
        y = node.output[0]
        before = []
        if other not in rewritten:  # the output of a rewritten Add is already the DQ of its pair
            if other not in paired:
                paired.add(other)
                before = pair(other, f"{other}_add_in", f"{other}_add_in_dq", thresholds[other])
            node.input[list(node.input).index(other)] = f"{other}_add_in_dq"
        node.output[0] = f"{y}_add_float"
        around[node.output[0]] = (before, pair(node.output[0], f"{y}_add_out", y, thresholds[y]))  # readers: DQ
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        before, after = around.get(node.output[0], ([], [])) if node.op_type == "Add" else ([], [])
        kept.extend([*before, node, *after])
    del graph.node[:]
    graph.node.extend(kept)
    _add_initializers(graph, new_inits)
    return out, len(adds)
