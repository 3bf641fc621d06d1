"""Float graph rewrites the ``cpu`` INT8 placement runs before it places Q/DQ pairs.

The exported graph writes GELU as ``x * (1 + erf(x / sqrt2))`` (times 0.5, which the simplifier often folds into the
next convolution's weights). Spelled out, GELU reads its input twice, so the convolution before it has two consumers
and cannot keep an int8 output on ONNX Runtime CPU (see int8.Placement.single_use); it also costs four passes over
the tensor instead of one. ``fuse_gelu`` replaces the pattern by ONNX Runtime's one-node ``com.microsoft.Gelu``.
The result runs on ONNX Runtime only, which is what the ``cpu`` placement is for (TensorRT fuses the pattern itself).
``fold_batchnorm`` folds MSCAN's pre-norm BatchNorms into the 1x1 convolutions and residuals around them (exact).
The rewrites of the placed Q/DQ graph are in int8_rewrite.py.
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


def _bn_affine(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(a, b) with BatchNormalization(x) = a * x + b per channel, or None when its parameters are not constants."""
    if len(node.input) != 5 or len(node.output) != 1 or not all(i in consts for i in node.input[1:]):
        return None
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    scale, bias, mean, var = (consts[i].astype(np.float64) for i in node.input[1:])
    a = scale / np.sqrt(var + eps)
    return a, bias - mean * a


def _pointwise_conv(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    """A 1x1, unpadded, ungrouped Conv with constant float weights (and bias, if any)."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in consts:
        return False
    w = consts[node.input[1]]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (w.dtype == np.float32 and w.ndim == 4 and w.shape[2:] == (1, 1) and int(attrs.get("group", 1)) == 1
            and not any(attrs.get("pads", [0])) and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and (len(node.input) < 3 or not node.input[2] or node.input[2] in consts))


def fold_batchnorm(model: onnx.ModelProto, consts: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Return a copy of ``model`` with MSCAN's pre-norm BatchNorms folded into the layers around them (exact).

    A block reads ``y = x + ls * (BN(x) + proj_2(...))`` with ``proj_1(BN(x))`` at the start of the attention and
    ``fc1(BN(y))`` at the start of the MLP. BN is per-channel ``a x + b``: into a 1x1 convolution reading it, it
    folds as weights ``W a`` and bias ``bias + W b``; in the residual it becomes ``y = (1 + ls a) x + proj_2'(...)``
    with ``ls`` and ``ls b`` folded into proj_2. A BatchNorm is folded only when every reader is one of these, so
    the int8 chain starts at the residual stream itself: one pass (BN) and, in the residual, an Add fewer per norm,
    and no float op between the residual Add and the Q of the next convolution.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    nodes = list(graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def only(tensor: str, op_type: str) -> Optional[onnx.NodeProto]:
        users = consumers.get(tensor, [])
        ok = len(users) == 1 and tensor not in outputs and users[0].op_type == op_type
        return users[0] if ok else None

    def per_channel(v: Optional[np.ndarray], c: int) -> Optional[np.ndarray]:
        if v is None or v.dtype != np.float32 or v.size not in (1, c) or (v.size == c and v.reshape(-1).shape[0] != c):
            return None
        if v.size == c and v.ndim >= 3 and v.shape[-2:] != (1, 1):
            return None
        return np.broadcast_to(v.reshape(-1).astype(np.float64), (c,))

    new_inits: list[onnx.TensorProto] = []
    dropped: set[int] = set()
    edits: list[tuple[onnx.NodeProto, int, str]] = []  # (node, input index, new input)
    extra: dict[int, list[onnx.NodeProto]] = {}  # id of a node -> nodes to insert before it

    def init(name: str, value: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    for bn in nodes:
        if bn.op_type != "BatchNormalization" or bn.output[0] in outputs:
            continue
        affine = _bn_affine(bn, consts)
        if affine is None:
            continue
        a, b = affine
        x, y = bn.input[0], bn.output[0]
        plan: list[tuple[str, tuple]] = []
        for user in consumers.get(y, []):
            if _pointwise_conv(user, consts) and user.input[0] == y and consts[user.input[1]].shape[1] == a.size:
                plan.append(("conv", (user,)))
                continue
            # Residual: Add(BN(x), P) -> Mul(., ls) -> Add(x, .), P a 1x1 Conv read only by that Add.
            other = [i for i in user.input if i != y]
            p = producer.get(other[0]) if user.op_type == "Add" and len(other) == 1 else None
            mul = only(user.output[0], "Mul") if p is not None else None
            if (p is None or mul is None or not _pointwise_conv(p, consts) or only(p.output[0], "Add") is not user):
                break
            ls = per_channel(consts.get(next((i for i in mul.input if i != user.output[0]), "")), a.size)
            res = consumers.get(mul.output[0], [])
            if ls is None or len(res) != 1 or res[0].op_type != "Add" or mul.output[0] in outputs or x not in res[0].input:
                break
            plan.append(("residual", (user, p, mul, res[0], ls)))
        else:
            if not plan:
                continue
            for kind, parts in plan:
                if kind == "conv":
                    (conv,) = parts
                    w = consts[conv.input[1]].astype(np.float64)
                    bias = consts[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else 0.0
                    tag = f"{conv.name or conv.output[0]}_bnfold"
                    new_w = init(f"{tag}_w", w * a[None, :, None, None])
                    new_b = init(f"{tag}_b", bias + w[:, :, 0, 0] @ b)
                    edits += [(conv, 0, x), (conv, 1, new_w)]
                    if len(conv.input) > 2:
                        edits.append((conv, 2, new_b))
                    else:
                        conv.input.append(new_b)
                    continue
                add, p, mul, res, ls = parts
                w = consts[p.input[1]].astype(np.float64)
                bias = consts[p.input[2]].astype(np.float64) if len(p.input) > 2 and p.input[2] else 0.0
                tag = f"{p.name or p.output[0]}_bnfold"
                new_w = init(f"{tag}_w", w * ls[:, None, None, None])
                new_b = init(f"{tag}_b", (bias + b) * ls)
                edits.append((p, 1, new_w))
                if len(p.input) > 2:
                    edits.append((p, 2, new_b))
                else:
                    p.input.append(new_b)
                gain = init(f"{tag}_gain", (1.0 + ls * a).reshape(1, -1, 1, 1))
                scaled = f"{tag}_x"
                extra.setdefault(id(res), []).append(
                    helper.make_node("Mul", [x, gain], [scaled], name=f"{res.name or res.output[0]}_bnfold_mul"))
                k = list(res.input).index(x)
                edits.append((res, k, scaled))
                edits.append((res, 1 - k, p.output[0]))
                dropped.update({id(add), id(mul)})
            dropped.add(id(bn))

    if not dropped:
        return out
    for node, i, name in edits:
        node.input[i] = name
    kept: list[onnx.NodeProto] = []
    for node in nodes:
        kept.extend(extra.get(id(node), []))
        if id(node) not in dropped:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_inits)
    return out
