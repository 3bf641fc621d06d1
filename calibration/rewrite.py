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
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    outputs = {o.name for o in graph.output}

    def only_user(tensor: str, op_type: str) -> Optional[int]:
        """The one node reading ``tensor`` if it is an ``op_type`` (and ``tensor`` no graph output)."""
        users = consumers.get(tensor, [])
        ok = len(users) == 1 and tensor not in outputs and nodes[users[0]].op_type == op_type
        return users[0] if ok else None

    replaced: dict[int, onnx.NodeProto] = {}  # index of a pattern's first node (Div) -> its Gelu
    dropped: set[int] = set()
    renamed: dict[str, tuple[str, float]] = {}
    new_inits: list[onnx.TensorProto] = []
    doubled: set[str] = set()
    for e, erf in enumerate(nodes):
        if erf.op_type != "Erf" or erf.input[0] not in producer:
            continue
        d = producer[erf.input[0]]
        div = nodes[d]
        if div.op_type != "Div" or not _scalar(consts, div.input[1], math.sqrt(2.0)) or only_user(div.output[0], "Erf") != e:
            continue
        x = div.input[0]
        a = only_user(erf.output[0], "Add")
        if a is None or not any(_scalar(consts, i, 1.0) for i in nodes[a].input):
            continue
        m = only_user(nodes[a].output[0], "Mul")
        if m is None or x not in nodes[m].input:
            continue
        mul = nodes[m]
        pattern = [d, e, a, m]
        h = only_user(mul.output[0], "Mul")
        if h is not None and any(_scalar(consts, i, 0.5) for i in nodes[h].input):
            result = nodes[h].output[0]
            pattern.append(h)
        else:
            users = [nodes[u] for u in consumers.get(mul.output[0], [])]
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
        replaced[d] = helper.make_node("Gelu", [x], [result], name=f"{mul.name}_gelu", domain=MS_DOMAIN)
        dropped.update(pattern)

    if not replaced:
        return out, {}
    kept = []
    for i, node in enumerate(nodes):
        if i in replaced:
            kept.append(replaced[i])
        if i not in dropped:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_inits)
    if not any(op.domain == MS_DOMAIN for op in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return out, renamed
