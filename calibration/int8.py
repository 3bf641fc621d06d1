"""Explicit INT8: write QuantizeLinear/DequantizeLinear pairs into an fp32 ONNX graph.

Symmetric everywhere (int8 zero points 0; an int8 GELU's input is uint8 with zero point 128, the same levels),
activations per tensor, weights per output channel (7-bit for cpu). Where the pairs go is the speed (a pair
around an op without an int8 kernel is pure overhead), so it is a per-target ``Placement``:

- ``cpu``: ONNX Runtime fuses DQ -> Conv/MatMul/Gemm -> Q into QLinearConv / QLinearMatMul / QGemm (uint8, NHWC,
  transposes at every float/int8 border). So outputs of quantized ops are quantized too (a Conv -> Conv chain
  stays int8), biases are int32, and only ops that keep such chains long are quantized: dense and 1x1 and 3x3
  depthwise convolutions, Linear layers. float_graph_rewrite.py first fuses the erf-GELU into one node and folds
  the pre-norm BatchNorms (exact); qdq_graph_rewrite.py, once the pairs are placed, runs GELUs and residual Adds in
  int8 too.
  Every choice was measured (docs/precision.md, benchmarks/bench_int8_cpu.py). The file is for ONNX Runtime.
- ``tensorrt``: TensorRT's explicit-quantization rules: Q/DQ on the inputs of Conv/MatMul/Gemm only (TensorRT
  fuses the pair into the op and decides output precision itself), weights per output channel (Conv axis 0),
  biases left float (TensorRT quantizes them itself).

Over 400 lines: the placement rules, the planning and the writing of the pairs share one Placement and one walk
of the graph; the graph rewrites before and after them live in float_graph_rewrite.py and qdq_graph_rewrite.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from scaseg.calibration.float_graph_rewrite import TensorUses, fold_batchnorm, fuse_gelu
from scaseg.calibration.qdq_graph_rewrite import int8_gelu, int8_residual_add

WEIGHTED_OPS = ("Conv", "MatMul", "Gemm")


@dataclass(frozen=True)
class Placement:
    """Which ops get Q/DQ pairs and how."""

    target: str
    depthwise: bool  # depthwise (group == channels) convolutions
    activation_matmul: bool  # MatMul of two activations (the attention logits and weighted sum)
    output_qdq: bool  # a Q/DQ pair on the outputs of quantized ops as well as their inputs
    int32_bias: bool  # Conv/Gemm bias as int32 + DQ (scale = input scale * weight scale)
    # ORT CPU converts a symmetric int8 Q -> DQ pair to its uint8 kernels only when the Q feeds one DQ feeding one
    # node. So: one pair per consumer, and ops whose output fans out stay float. The k-th pair on a tensor gets its
    # scale k float32 ulps up: ORT merges equal Q nodes, which would give one Q two DQs.
    single_use: bool = False
    # Convs/Linears with fewer input features (Cin * kh * kw, or K) stay float; 32 keeps the 3-channel stem float.
    min_features: int = 0
    # Ops with fewer output channels (Conv) or columns (MatMul/Gemm) than this stay float.
    min_outputs: int = 0
    # Depthwise kernel sizes quantized (None: all). On ORT CPU int8 depthwise pays only inside a chain (MLP 3x3).
    depthwise_kernels: Optional[tuple[tuple[int, int], ...]] = None
    # The erf-GELU as one com.microsoft.Gelu (ORT only); once placed, as int8 QLinearSigmoid + QLinearMul; and
    # residual Adds after an int8 op as QLinearAdd (qdq_graph_rewrite.py).
    fuse_gelu: bool = False
    int8_gelu: bool = False
    int8_add: bool = False
    # Data-movement ops that an input pair is pushed up through (single_use only), with the input's scale.
    int8_movement: tuple[str, ...] = ()
    # Fold the pre-norm BatchNorms into the 1x1 convs and residuals around them first (float_graph_rewrite.py, exact).
    fold_bn: bool = False
    # Largest |int8 weight|. ORT CPU's u8 x s8 kernels on x86 without VNNI (AVX2) add u8*s8 pairs in int16, which
    # saturates near +-127 (a per-channel QLinearConv was 0.69 off its own Q/DQ graph); 63 (7 bits) cannot.
    weight_max: int = 127


PLACEMENTS = {
    "cpu": Placement("cpu", depthwise=True, activation_matmul=False, output_qdq=True, int32_bias=True, single_use=True,
                     min_features=32, depthwise_kernels=((3, 3),), fuse_gelu=True, int8_gelu=True, int8_add=True,
                     fold_bn=True,
                     int8_movement=("Concat",), weight_max=63),
    "tensorrt": Placement("tensorrt", depthwise=True, activation_matmul=True, output_qdq=False, int32_bias=False),
}


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every unnamed node a unique, deterministic name (the guard and reports refer to nodes by name)."""
    seen = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in seen:
                name += "_"
            node.name = name
            seen.add(name)
    return model


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every constant tensor of the main graph: initializers and Constant node outputs."""
    out = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


@dataclass(frozen=True)
class _Target:
    """One op to quantize: which of its inputs are activations, which is the weight, and its weight axis."""

    node: str
    activations: tuple[int, ...]
    weight: Optional[int]
    axis: int
    output: str


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _plan_node(node: onnx.NodeProto, consts: dict[str, np.ndarray], placement: Placement) -> Optional[_Target]:
    """How ``node`` would be quantized under ``placement``, or None if it stays float."""
    if node.op_type not in WEIGHTED_OPS:
        return None

    def float_const(i: int, ndim: Optional[int] = None) -> bool:
        v = consts.get(node.input[i]) if len(node.input) > i else None
        return v is not None and v.dtype == np.float32 and (ndim is None or v.ndim == ndim)

    if node.op_type == "Conv":
        if not float_const(1, 4):
            return None
        w = consts[node.input[1]]
        group = int(_attr(node, "group", 1))
        if group > 1 and not (placement.depthwise and w.shape[1] == 1):
            return None
        kernels = placement.depthwise_kernels
        if group > 1 and kernels is not None and tuple(int(k) for k in w.shape[2:]) not in kernels:
            return None
        if group == 1 and int(np.prod(w.shape[1:])) < placement.min_features:
            return None
        if w.shape[0] < placement.min_outputs:
            return None
        return _Target(node.name, (0,), 1, 0, node.output[0])
    if node.op_type == "Gemm":
        if int(_attr(node, "transA", 0)) or float(_attr(node, "alpha", 1.0)) != 1.0 or not float_const(1, 2):
            return None
        trans_b = int(_attr(node, "transB", 0))
        k, n = consts[node.input[1]].shape[::-1] if trans_b else consts[node.input[1]].shape
        if k < placement.min_features or n < placement.min_outputs:
            return None
        return _Target(node.name, (0,), 1, 0 if trans_b else 1, node.output[0])
    # MatMul: a Linear layer (constant 2-D weight on the right) or two activations.
    if float_const(1, 2):
        k, n = consts[node.input[1]].shape
        if k < placement.min_features or n < placement.min_outputs:
            return None
        return _Target(node.name, (0,), 1, 1, node.output[0])
    if node.input[0] in consts or node.input[1] in consts:
        return None
    return _Target(node.name, (0, 1), None, 0, node.output[0]) if placement.activation_matmul else None


def plan(model: onnx.ModelProto, target: str) -> list[_Target]:
    """The ops ``target``'s placement quantizes, in graph order (nodes must be named: see name_nodes)."""
    placement = PLACEMENTS[target]
    consts = constants(model)
    return [t for t in (_plan_node(n, consts, placement) for n in model.graph.node) if t is not None]


def tensors_to_calibrate(model: onnx.ModelProto) -> list[str]:
    """Activation tensors either placement may quantize: inputs and outputs of every weighted op and Add."""
    consts = constants(model)
    widest = Placement("any", depthwise=True, activation_matmul=True, output_qdq=True, int32_bias=False)
    names: list[str] = []
    for node in model.graph.node:
        t = _plan_node(node, consts, widest)
        if t is None:
            if node.op_type == "Add" and not any(i in consts for i in node.input):
                names += [*node.input, node.output[0]]
            continue
        for i in t.activations:
            names.append(node.input[i])
        names.append(t.output)
    return list(dict.fromkeys(names))


def _quantize_weight(w: np.ndarray, axis: int, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    amax = np.abs(w).max(axis=tuple(d for d in range(w.ndim) if d != axis)).astype(np.float64)
    scales = np.maximum(amax, 1e-12) / float(qmax)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scales.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scales.astype(np.float32)


def prepare(model: onnx.ModelProto, thresholds: dict[str, float], target: str
            ) -> tuple[onnx.ModelProto, dict[str, float]]:
    """The float graph ``target``'s placement quantizes (a copy; rewritten for cpu), and thresholds to match it.

    Also what bench_precision times as "fp32 with the same rewrites", to separate their gain from int8's.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    placement = PLACEMENTS[target]
    if placement.fuse_gelu:
        out, renamed = fuse_gelu(out, constants(out))
        derived = {new: thresholds[old] * factor for new, (old, factor) in renamed.items() if old in thresholds}
        thresholds = {**thresholds, **derived}
    if placement.fold_bn:
        out = fold_batchnorm(out, constants(out))
    return out, thresholds


def quantize(
    model: onnx.ModelProto,
    thresholds: dict[str, float],
    target: str,
    keep_float: Iterable[str] = (),
) -> onnx.ModelProto:
    """Return a copy of ``model`` with Q/DQ pairs placed for ``target``; nodes named in ``keep_float`` stay fp32.

    ``thresholds`` maps activation tensor names to their symmetric clipping range (scale = threshold / 127).
    Ops whose activations have no threshold stay float.
    """
    placement = PLACEMENTS[target]
    out, thresholds = prepare(model, thresholds, target)
    writer = _PairWriter(out.graph, thresholds, placement)
    targets = writer.quantizable(plan(out, target), set(keep_float))
    # Outputs first (cpu): every consumer reads the dequantized value, so DQ -> op -> Q units fuse.
    if placement.output_qdq:
        writer.pair_outputs(targets)
    consts = constants(out)
    for t in targets:
        writer.pair_activations(t)
        if t.weight is not None:
            writer.quantize_weight_and_bias(t, consts)
    writer.splice()
    _drop_unused_constants(out.graph)
    if placement.int8_add:
        out, _ = int8_residual_add(out, thresholds)
    if placement.int8_gelu:
        out, _ = int8_gelu(out)
    return out


class _PairWriter:
    """The Q/DQ pairs and int8 initializers of one quantize() call, collected on one walk and spliced in at the end."""

    def __init__(self, graph: onnx.GraphProto, thresholds: dict[str, float], placement: Placement) -> None:
        self.graph, self.thresholds, self.placement = graph, thresholds, placement
        self.by_name = {n.name: n for n in graph.node}
        # Readers as the graph was before any pair: the fan-out rules ask about the float graph.
        uses = TensorUses(graph)
        self.producer, self.consumers, self.graph_outputs = uses.producer, uses.consumers, uses.outputs
        self.zero = "scaseg_qdq_zero_int8"
        self.new_inits: list[TensorProto] = [numpy_helper.from_array(np.array(0, dtype=np.int8), self.zero)]
        self.before: dict[str, list[onnx.NodeProto]] = {}  # node name -> nodes to insert before it
        self.scales: set[str] = set()
        self.pairs: dict[str, int] = {}
        self.dequantized: dict[str, str] = {}  # dequantized name -> float tensor it stands for
        self.shared: dict[str, str] = {}  # float tensor -> its one dequantized twin (all consumers read it)

    def quantizable(self, planned: list[_Target], keep: set[str]) -> list[_Target]:
        """The planned ops not kept float whose activations (and outputs, where paired) all have a threshold."""
        targets = [
            t for t in planned
            if t.node not in keep
            and all(self.by_name[t.node].input[i] in self.thresholds for i in t.activations)
            and (not self.placement.output_qdq or t.output in self.thresholds)
        ]
        if self.placement.single_use:
            targets = [t for t in targets
                       if t.output not in self.graph_outputs and len(self.consumers.get(t.output, [])) == 1]
        return targets

    def scale_of(self, tensor: str) -> float:
        return float(self.thresholds[tensor]) / 127.0  # symmetric int8

    def qdq(self, tensor: str, anchor: str, ref: Optional[str] = None) -> str:
        """Q then DQ of ``tensor`` (with ``ref``'s scale, default its own) just before node ``anchor``; returns the
        dequantized name."""
        single_use, zero = self.placement.single_use, self.zero
        k = self.pairs[tensor] = self.pairs.get(tensor, -1) + 1
        tag = f"{tensor}_{k}" if k else tensor
        scale = f"{tag}_scale" if single_use else f"{tensor}_scale"
        if scale not in self.scales:
            self.scales.add(scale)
            value = np.float32(self.scale_of(ref or tensor))
            for _ in range(k if single_use else 0):
                value = np.nextafter(value, np.float32(np.inf))  # 1 ulp apart: ORT would merge equal Q nodes
            self.new_inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), scale))
        q = helper.make_node("QuantizeLinear", [tensor, scale, zero], [f"{tag}_q"], name=f"{tag}_Q")
        dq = helper.make_node("DequantizeLinear", [f"{tag}_q", scale, zero], [f"{tag}_dq"], name=f"{tag}_DQ")
        self.before.setdefault(anchor, []).extend([q, dq])
        self.dequantized[f"{tag}_dq"] = tensor
        return f"{tag}_dq"

    def pair_outputs(self, targets: list[_Target]) -> None:
        """One shared pair on each quantized op's output, read by all its consumers."""
        for t in targets:
            users = self.consumers.get(t.output, [])
            if t.output in self.graph_outputs or t.output in self.shared or not users:
                continue
            dq = self.shared[t.output] = self.qdq(t.output, users[0].name)
            for user in users:
                for k, name in enumerate(user.input):
                    if name == t.output:
                        user.input[k] = dq

    def pair_activations(self, t: _Target) -> None:
        """Pairs on the activation inputs of ``t``'s op (one per consumer where single_use, else one shared)."""
        node = self.by_name[t.node]
        for i in t.activations:
            src = node.input[i]
            if src in self.dequantized:
                continue  # already the dequantized output of a quantized producer
            if self.placement.single_use:
                self.pair_input(node, i, src)
            else:
                if src not in self.shared:
                    self.shared[src] = self.qdq(src, node.name)
                node.input[i] = self.shared[src]

    def pair_input(self, node: onnx.NodeProto, i: int, ref: str) -> None:
        """One Q/DQ pair on input ``i`` of ``node`` with ``ref``'s scale; pushed up through int8 data movement."""
        src = node.input[i]
        if src in self.dequantized:
            return  # already the dequantized output of a quantized producer
        up = self.producer.get(src)
        if up is not None and len(self.consumers.get(src, [])) == 1 and src not in self.graph_outputs:
            for j in _movement_inputs(up, self.placement):
                self.pair_input(up, j, ref)
        node.input[i] = self.qdq(src, node.name, ref)

    def quantize_weight_and_bias(self, t: _Target, consts: dict[str, np.ndarray]) -> None:
        """The weight as int8 per output channel + DQ; the bias as int32 + DQ where the placement asks for it."""
        assert t.weight is not None
        node = self.by_name[t.node]
        wq, ws = _quantize_weight(consts[node.input[t.weight]], t.axis, self.placement.weight_max)
        base = f"{node.name}_w"
        self.new_inits += [numpy_helper.from_array(wq, f"{base}_int8"), numpy_helper.from_array(ws, f"{base}_scale"),
                           numpy_helper.from_array(np.zeros(ws.shape, np.int8), f"{base}_zero")]
        self.before.setdefault(node.name, []).append(helper.make_node(
            "DequantizeLinear", [f"{base}_int8", f"{base}_scale", f"{base}_zero"], [f"{base}_dq"],
            name=f"{base}_DQ", axis=t.axis))
        node.input[t.weight] = f"{base}_dq"
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if not (self.placement.int32_bias and bias is not None and bias in consts):
            return
        b = consts[bias].astype(np.float64)
        bscale = ws.astype(np.float64) * self.scale_of(self.dequantized[node.input[0]])
        if b.shape != bscale.shape:
            return
        bq = np.clip(np.round(b / bscale), -(2**31) + 1, 2**31 - 1).astype(np.int32)
        bname = f"{node.name}_b"
        self.new_inits += [numpy_helper.from_array(bq, f"{bname}_int32"),
                           numpy_helper.from_array(bscale.astype(np.float32), f"{bname}_scale"),
                           numpy_helper.from_array(np.zeros(bq.shape, np.int32), f"{bname}_zero")]
        self.before[node.name].append(helper.make_node(
            "DequantizeLinear", [f"{bname}_int32", f"{bname}_scale", f"{bname}_zero"], [f"{bname}_dq"],
            name=f"{bname}_DQ", axis=0))
        node.input[2] = f"{bname}_dq"

    def splice(self) -> None:
        """Insert the collected nodes before their anchors, in topological order, and add the new initializers."""
        graph, nodes = self.graph, []
        for node in graph.node:
            nodes += [*self.before.get(node.name, []), node]
        del graph.node[:]
        graph.node.extend(_topological(nodes, {i.name for i in graph.input} | {i.name for i in graph.initializer}
                                       | {i.name for i in self.new_inits}))
        graph.initializer.extend(self.new_inits)


def _movement_inputs(node: onnx.NodeProto, placement: Placement) -> list[int]:
    """Inputs of a data-movement op that ORT CPU runs in uint8 between Q/DQ pairs (empty: not such an op).

    Concat becomes QLinearConcat; Resize (nearest/linear) drops its pairs and interpolates uint8 directly. Quantizing
    before them moves 4x fewer bytes and keeps ORT's NCHW -> NHWC transposes on uint8 data.
    """
    if node.op_type not in placement.int8_movement:
        return []
    if node.op_type == "Concat":
        return list(range(len(node.input)))
    if node.op_type == "Resize" and _attr(node, "mode", b"nearest") in (b"nearest", b"linear", "nearest", "linear"):
        return [0]
    return []


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Order nodes so each comes after its producers (inserted Q/DQ may feed nodes placed earlier)."""
    ready = set(available) | {""}
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # inputs from outer scopes or unknown: keep the original order
            ordered.extend(rest)
            break
        pending = rest
    return ordered


def _drop_unused_constants(graph: onnx.GraphProto) -> None:
    """Remove initializers and Constant nodes nothing reads (float weights replaced by their int8 form)."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for attr_graph in (a.g for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH):
        used |= {i for n in attr_graph.node for i in n.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = [n for n in graph.node if n.op_type != "Constant" or any(o in used for o in n.output)]
    del graph.node[:]
    graph.node.extend(nodes)


def _dequantized_outputs(model: onnx.ModelProto) -> set[str]:
    return {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}


def quantized_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the Conv/MatMul/Gemm nodes that run in int8: their data and weight (or second operand) dequantized."""
    dq_out = _dequantized_outputs(model)
    return {n.name for n in model.graph.node
            if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[0] in dq_out and n.input[1] in dq_out}


def count_quantized(model: onnx.ModelProto) -> dict[str, int]:
    """Op type -> how many Conv/MatMul/Gemm nodes have a dequantized weight (or second operand) and input; "Gelu"
    and "Add" -> how many GELUs (a Sigmoid) and Adds sit between DQs and a Q (qdq_graph_rewrite.py)."""
    dq_out = _dequantized_outputs(model)
    q_in = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    quantized = quantized_nodes(model)
    counts: dict[str, int] = {}
    for n in model.graph.node:
        if n.name in quantized:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
        elif n.op_type in ("Sigmoid", "Add") and all(i in dq_out for i in n.input) and n.output[0] in q_in:
            key = "Gelu" if n.op_type == "Sigmoid" else "Add"
            counts[key] = counts.get(key, 0) + 1
    return counts


def weighted_macs(model: onnx.ModelProto, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Node name -> multiply-accumulates of each Conv/MatMul/Gemm for one run on an input of ``input_shape``.

    Shapes come from ONNX shape inference with the graph input fixed to ``input_shape``; a node whose shapes it
    cannot tell counts 0. (scaseg.stats counts the PyTorch model; this counts the graph the guard quantizes.)
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    inits = {t.name for t in work.graph.initializer}
    data_input = next(v for v in work.graph.input if v.name not in inits)
    dims = data_input.type.tensor_type.shape.dim
    for dim, size in zip(dims, input_shape):
        dim.Clear()
        dim.dim_value = int(size)
    del work.graph.value_info[:]
    try:
        work = onnx.shape_inference.infer_shapes(work)
    except Exception:  # a graph inference cannot follow: every node counts 0
        return {n.name: 0 for n in work.graph.node if n.op_type in WEIGHTED_OPS}
    shapes: dict[str, tuple[int, ...]] = {}
    for v in list(work.graph.value_info) + list(work.graph.input) + list(work.graph.output):
        d = v.type.tensor_type.shape.dim
        if d and all(x.HasField("dim_value") for x in d):
            shapes[v.name] = tuple(int(x.dim_value) for x in d)
    consts = constants(work)
    shapes.update({name: tuple(value.shape) for name, value in consts.items()})
    macs = {}
    for node in work.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        out, a, b = (shapes.get(node.output[0]), shapes.get(node.input[0]), shapes.get(node.input[1]))
        if out is None or a is None or b is None:
            macs[node.name] = 0
        elif node.op_type == "Conv":
            macs[node.name] = int(np.prod(out)) * int(np.prod(b[1:]))
        elif node.op_type == "Gemm":
            macs[node.name] = int(np.prod(out)) * int(a[0] if _attr(node, "transA", 0) else a[-1])
        else:
            macs[node.name] = int(np.prod(out)) * int(a[-1])
    return macs


def float_share(macs: dict[str, int], model: onnx.ModelProto) -> float:
    """The share (0..1) of ``macs`` that ``model`` runs in float (its Conv/MatMul/Gemm nodes without int8 inputs)."""
    total = sum(macs.values())
    quantized = quantized_nodes(model)
    return sum(v for name, v in macs.items() if name not in quantized) / total if total else 0.0
