"""Float graph rewrites the ``cpu`` INT8 placement runs before it places Q/DQ pairs.

The exported graph writes GELU as ``x * (1 + erf(x / sqrt2))`` (times 0.5, which the simplifier often folds into the
next convolution's weights). Spelled out, GELU reads its input twice, so the convolution before it has two consumers
and cannot keep an int8 output on ONNX Runtime CPU (see int8.Placement.single_use); it also costs four passes over
the tensor instead of one. ``fuse_gelu`` replaces the pattern by ONNX Runtime's one-node ``com.microsoft.Gelu``.
The result runs on ONNX Runtime only, which is what the ``cpu`` placement is for (TensorRT fuses the pattern itself).
``fold_batchnorm`` folds MSCAN's pre-norm BatchNorms into the 1x1 convolutions and residuals around them (exact).
The rewrites of the placed Q/DQ graph are in qdq_graph_rewrite.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"
_TOL = 1e-4


def _scalar(consts: dict[str, np.ndarray], name: str, value: float) -> bool:
    v = consts.get(name)
    return v is not None and v.size == 1 and abs(float(v.reshape(-1)[0]) - value) < _TOL


class TensorUses:
    """Who writes and who reads each tensor of a graph (as it was when indexed), and the graph's outputs."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}

    def only(self, tensor: str, op_type: str) -> Optional[onnx.NodeProto]:
        """The one node reading ``tensor`` if it is an ``op_type`` (and ``tensor`` no graph output)."""
        users = self.consumers.get(tensor, [])
        ok = len(users) == 1 and tensor not in self.outputs and users[0].op_type == op_type
        return users[0] if ok else None


def _splice(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], before: dict[int, list[onnx.NodeProto]],
            dropped: set[int], new_inits: list[onnx.TensorProto]) -> None:
    """Rewrite ``graph``'s nodes: ``before[id(node)]`` inserted ahead of each node, nodes whose id is in ``dropped``
    left out, ``new_inits`` added."""
    kept: list[onnx.NodeProto] = []
    for node in nodes:
        kept.extend(before.get(id(node), []))
        if id(node) not in dropped:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_inits)


def fuse_gelu(model: onnx.ModelProto, consts: dict[str, np.ndarray]) -> tuple[onnx.ModelProto, dict[str, tuple[str, float]]]:
    """Return a copy of ``model`` with every erf-GELU as one Gelu node, and the tensors whose meaning changed.

    ``consts``: the model's constant tensors (int8.constants). Where the 0.5 was folded into the weights of the
    convolutions that read the GELU, those weights are doubled and the Gelu output gets a new name: the returned dict
    maps it to (the tensor it replaces, factor), so a calibrated range can be carried over (factor 0.5).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    readers = TensorUses(out.graph)
    replaced: dict[int, list[onnx.NodeProto]] = {}  # id of a pattern's first node (Div) -> [its Gelu]
    dropped: set[int] = set()
    renamed: dict[str, tuple[str, float]] = {}
    new_inits: list[onnx.TensorProto] = []
    doubled: set[str] = set()
    for erf in readers.nodes:
        match = _match_erf_gelu(erf, consts, readers)
        if match is None:
            continue
        x, pattern, half = match
        mul = pattern[-1]
        if half is not None:
            result = half.output[0]
            pattern.append(half)
        else:
            folded = _double_conv_readers(mul, consts, readers, new_inits, doubled)
            if folded is None:
                continue
            result = folded
            renamed[result] = (mul.output[0], 0.5)
        gelu = helper.make_node("Gelu", [x], [result], name=f"{mul.name}_gelu", domain=MS_DOMAIN)
        replaced[id(pattern[0])] = [gelu]
        dropped.update(id(n) for n in pattern)

    if not replaced:
        return out, {}
    _splice(out.graph, readers.nodes, replaced, dropped, new_inits)
    if not any(op.domain == MS_DOMAIN for op in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return out, renamed


def _match_erf_gelu(erf: onnx.NodeProto, consts: dict[str, np.ndarray], readers: TensorUses
                    ) -> Optional[tuple[str, list[onnx.NodeProto], Optional[onnx.NodeProto]]]:
    """``x * (1 + erf(x / sqrt2))`` around ``erf``, each step read only by the next: (x, [Div, Erf, Add, Mul], the
    ``* 0.5`` Mul after them or None where it was folded away), or None where ``erf`` is not such a pattern."""
    if erf.op_type != "Erf" or erf.input[0] not in readers.producer:
        return None
    div = readers.producer[erf.input[0]]
    if (div.op_type != "Div" or not _scalar(consts, div.input[1], math.sqrt(2.0))
            or readers.only(div.output[0], "Erf") is not erf):
        return None
    x = div.input[0]
    add = readers.only(erf.output[0], "Add")
    if add is None or not any(_scalar(consts, i, 1.0) for i in add.input):
        return None
    mul = readers.only(add.output[0], "Mul")
    if mul is None or x not in mul.input:
        return None
    half = readers.only(mul.output[0], "Mul")
    if half is None or not any(_scalar(consts, i, 0.5) for i in half.input):
        half = None
    return x, [div, erf, add, mul], half


def _double_conv_readers(mul: onnx.NodeProto, consts: dict[str, np.ndarray], readers: TensorUses,
                         new_inits: list[onnx.TensorProto], doubled: set[str]) -> Optional[str]:
    """With the 0.5 folded away the readers of ``mul`` see 2 * GELU(x): double their weights (every output stays
    exact) and make them read the Gelu's new output, whose name is returned; None where a reader is not a float
    Conv reading it as data."""
    users = readers.consumers.get(mul.output[0], [])
    if not users or mul.output[0] in readers.outputs or not all(
            u.op_type == "Conv" and u.input[0] == mul.output[0] and u.input[1] in consts
            and consts[u.input[1]].dtype == np.float32 for u in users):
        return None
    result = f"{mul.output[0]}_gelu"
    for u in users:
        name = f"{u.input[1]}_x2"
        if name not in doubled:
            doubled.add(name)
            new_inits.append(numpy_helper.from_array(consts[u.input[1]] * np.float32(2.0), name))
        u.input[1] = name
        u.input[0] = result
    return result


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
    readers = TensorUses(out.graph)
    fold = _BatchNormFold(consts)
    for bn in readers.nodes:
        if bn.op_type != "BatchNormalization" or bn.output[0] in readers.outputs:
            continue
        affine = _bn_affine(bn, consts)
        if affine is None:
            continue
        readers_plan = _plan_bn_readers(bn, affine[0].size, consts, readers)
        if not readers_plan:
            continue
        for reader in readers_plan:
            if isinstance(reader, _ResidualReader):
                fold.into_residual(reader, bn.input[0], affine)
            else:
                fold.into_conv(reader, bn.input[0], affine)
        fold.dropped.add(id(bn))

    if not fold.dropped:
        return out
    for node, i, name in fold.edits:
        node.input[i] = name
    _splice(out.graph, readers.nodes, fold.extra, fold.dropped, fold.new_inits)
    return out


@dataclass(frozen=True)
class _ResidualReader:
    """Add(BN(x), P) -> Mul(., ls) -> Add(x, .), with P a 1x1 Conv read only by that Add."""

    add: onnx.NodeProto
    conv: onnx.NodeProto
    mul: onnx.NodeProto
    residual: onnx.NodeProto
    ls: np.ndarray


def _per_channel(v: Optional[np.ndarray], c: int) -> Optional[np.ndarray]:
    """``v`` as ``c`` float64 values (a float32 scalar or one per channel), or None when it is not such a tensor."""
    if v is None or v.dtype != np.float32 or v.size not in (1, c) or (v.size == c and v.reshape(-1).shape[0] != c):
        return None
    if v.size == c and v.ndim >= 3 and v.shape[-2:] != (1, 1):
        return None
    return np.broadcast_to(v.reshape(-1).astype(np.float64), (c,))


def _plan_bn_readers(bn: onnx.NodeProto, channels: int, consts: dict[str, np.ndarray], readers: TensorUses
                     ) -> Optional[list[Union[onnx.NodeProto, _ResidualReader]]]:
    """Every reader of ``bn``'s output as a 1x1 Conv (the node) or a residual (its parts); None if one is neither."""
    x, y = bn.input[0], bn.output[0]
    plan: list[Union[onnx.NodeProto, _ResidualReader]] = []
    for user in readers.consumers.get(y, []):
        if _pointwise_conv(user, consts) and user.input[0] == y and consts[user.input[1]].shape[1] == channels:
            plan.append(user)
            continue
        other = [i for i in user.input if i != y]
        p = readers.producer.get(other[0]) if user.op_type == "Add" and len(other) == 1 else None
        mul = readers.only(user.output[0], "Mul") if p is not None else None
        if p is None or mul is None or not _pointwise_conv(p, consts) or readers.only(p.output[0], "Add") is not user:
            return None
        ls = _per_channel(consts.get(next((i for i in mul.input if i != user.output[0]), "")), channels)
        res = readers.consumers.get(mul.output[0], [])
        if (ls is None or len(res) != 1 or res[0].op_type != "Add" or mul.output[0] in readers.outputs
                or x not in res[0].input):
            return None
        plan.append(_ResidualReader(user, p, mul, res[0], ls))
    return plan


class _BatchNormFold:
    """The edits of fold_batchnorm, collected first and applied once every BatchNorm was planned."""

    def __init__(self, consts: dict[str, np.ndarray]) -> None:
        self.consts = consts
        self.new_inits: list[onnx.TensorProto] = []
        self.dropped: set[int] = set()
        self.edits: list[tuple[onnx.NodeProto, int, str]] = []  # (node, input index, new input)
        self.extra: dict[int, list[onnx.NodeProto]] = {}  # id of a node -> nodes to insert before it

    def init(self, name: str, value: np.ndarray) -> str:
        self.new_inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def _weights(self, conv: onnx.NodeProto) -> tuple[np.ndarray, Union[np.ndarray, float], str]:
        w = self.consts[conv.input[1]].astype(np.float64)
        bias = self.consts[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else 0.0
        return w, bias, f"{conv.name or conv.output[0]}_bnfold"

    def _set_bias(self, conv: onnx.NodeProto, new_b: str) -> None:
        if len(conv.input) > 2:
            self.edits.append((conv, 2, new_b))
        else:
            conv.input.append(new_b)

    def into_conv(self, conv: onnx.NodeProto, x: str, affine: tuple[np.ndarray, np.ndarray]) -> None:
        """A 1x1 Conv reading BN(x) reads x, with weights ``W a`` and bias ``bias + W b``."""
        a, b = affine
        w, bias, tag = self._weights(conv)
        new_w = self.init(f"{tag}_w", w * a[None, :, None, None])
        new_b = self.init(f"{tag}_b", bias + w[:, :, 0, 0] @ b)
        self.edits += [(conv, 0, x), (conv, 1, new_w)]
        self._set_bias(conv, new_b)

    def into_residual(self, reader: _ResidualReader, x: str, affine: tuple[np.ndarray, np.ndarray]) -> None:
        """``x + ls * (BN(x) + P)`` becomes ``(1 + ls a) x + P'`` with ``ls`` and ``ls b`` folded into P."""
        a, b = affine
        p, res, ls = reader.conv, reader.residual, reader.ls
        w, bias, tag = self._weights(p)
        new_w = self.init(f"{tag}_w", w * ls[:, None, None, None])
        new_b = self.init(f"{tag}_b", (bias + b) * ls)
        self.edits.append((p, 1, new_w))
        self._set_bias(p, new_b)
        gain = self.init(f"{tag}_gain", (1.0 + ls * a).reshape(1, -1, 1, 1))
        scaled = f"{tag}_x"
        self.extra.setdefault(id(res), []).append(
            helper.make_node("Mul", [x, gain], [scaled], name=f"{res.name or res.output[0]}_bnfold_mul"))
        k = list(res.input).index(x)
        self.edits.append((res, k, scaled))
        self.edits.append((res, 1 - k, p.output[0]))
        self.dropped.update({id(reader.add), id(reader.mul)})
