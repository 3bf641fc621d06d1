"""Float graph rewrites the ``cpu`` INT8 placement runs before it places Q/DQ pairs.

The exported graph writes GELU as ``x * (1 + erf(x / sqrt2))`` (times 0.5, which the simplifier often folds into the
next convolution's weights). Spelled out, GELU reads its input twice, so the convolution before it has two consumers
and cannot keep an int8 output on ONNX Runtime CPU (see int8.Placement.single_use); it also costs four passes over
the tensor instead of one. ``fuse_gelu`` replaces the pattern by ONNX Runtime's one-node ``com.microsoft.Gelu``.
The result runs on ONNX Runtime only, which is what the ``cpu`` placement is for (TensorRT fuses the pattern itself).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"
_TOL = 1e-4


def _scalar(consts: dict[str, np.ndarray], name: str, value: float) -> bool:
    v = consts.get(name)
    return v is not None and v.size == 1 and abs(float(v.reshape(-1)[0]) - value) < _TOL


def fuse_gelu(model: onnx.ModelProto, consts: dict[str, np.ndarray]) -> tuple[onnx.ModelProto, dict[str, tuple[str, float]]]:
    """Return a copy of ``model`` with every erf-GELU as one Gelu node, and the tensors whose meaning changed.

    ``consts``: the model's constant tensors (int8.constants). Where the 0.5 was folded into the weights of the
    convolutions that read the GELU, those weights are doubled and the Gelu output gets a new name: the returned dict
    maps it to (the tensor it replaces, factor), so a calibrated range can be carried over (factor 0.5).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    outputs = {o.name for o in graph.output}

    def only_user(tensor: str) -> Optional[onnx.NodeProto]:
        users = consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in outputs else None

    replaced: dict[int, onnx.NodeProto] = {}  # id(first node of a pattern) -> its Gelu
    dropped: set[int] = set()
    renamed: dict[str, tuple[str, float]] = {}
    new_inits: list[onnx.TensorProto] = []
    doubled: set[str] = set()
    for erf in graph.node:
        if erf.op_type != "Erf":
            continue
        div = producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or not _scalar(consts, div.input[1], math.sqrt(2.0)):
            continue
        x = div.input[0]
        add = only_user(erf.output[0])
        if add is None or add.op_type != "Add" or not any(_scalar(consts, i, 1.0) for i in add.input):
            continue
        mul = only_user(add.output[0])
        if mul is None or mul.op_type != "Mul" or x not in mul.input:
            continue
        half = only_user(mul.output[0])
        pattern = [div, erf, add, mul]
        if half is not None and half.op_type == "Mul" and any(_scalar(consts, i, 0.5) for i in half.input):
            result = half.output[0]
            pattern.append(half)
        else:
            users = consumers.get(mul.output[0], [])
            # 0.5 folded away: the users see 2 * GELU(x). Doubling their weights keeps every output exact.
            if not users or mul.output[0] in outputs or not all(
                    u.op_type == "Conv" and u.input[0] == mul.output[0] and u.input[1] in consts
                    and consts[u.input[1]].dtype == np.float32 for u in users):
                continue
            result = f"{mul.output[0]}_gelu"
            renamed[result] = (mul.output[0], 0.5)
            for u in users:
                name = f"{u.input[1]}_x2"
                if name not in doubled:
                    doubled.add(name)
                    new_inits.append(numpy_helper.from_array(consts[u.input[1]] * np.float32(2.0), name))
                u.input[1] = name
                u.input[0] = result
        replaced[id(div)] = helper.make_node("Gelu", [x], [result], name=f"{mul.name}_gelu", domain=MS_DOMAIN)
        dropped.update(id(n) for n in pattern)

    if not replaced:
        return out, {}
    nodes = []
    for node in graph.node:
        if id(node) in replaced:
            nodes.append(replaced[id(node)])
        if id(node) not in dropped:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    if not any(op.domain == MS_DOMAIN for op in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return out, renamed
