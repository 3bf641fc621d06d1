"""FP16 ONNX with float32 inputs and outputs, for strongly typed TensorRT builds.

Kept in fp32: LayerNormalization, Softmax and reductions (their sums of squares and exponentials overflow or
lose too much in fp16), plus every node whose output was measured, on the parity images, to come within 2x of
the fp16 limit (65504). The conversion itself is ONNX Runtime's float16 converter (Cast nodes at the borders).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from scaseg.calibration.session import first_output, runner
from scaseg.data.metrics import label_agreement

KEEP_FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2",
                 "ReduceLogSumExp", "Pow", "Sqrt")
FP16_MAX = 65504.0
HEADROOM = 2.0  # an activation above FP16_MAX / HEADROOM on the parity images is kept in fp32


@dataclass
class Fp16Report:
    """Parity of the fp16 model against fp32 on the same inputs, and what stayed fp32."""

    max_abs_error: float
    argmax_agreement: float  # fraction of pixels
    kept_fp32_ops: list[str]
    kept_fp32_nodes: list[str]  # measured near-overflow nodes
    images: int


def _float_outputs(model: onnx.ModelProto) -> dict[str, str]:
    """Output tensor -> node name, for nodes that compute float tensors (not shape arithmetic)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    return {o: n.name for n in model.graph.node for o in n.output
            if types.get(o) == onnx.TensorProto.FLOAT and n.op_type != "Constant"}


def near_overflow(model: onnx.ModelProto, batches: Sequence[np.ndarray]) -> list[str]:
    """Nodes whose float output reaches FP16_MAX / HEADROOM on ``batches``."""
    outs = _float_outputs(model)
    run = runner(model, list(outs))
    peak: dict[str, float] = {}
    for b in batches:
        for name, value in run(b).items():
            if name in outs and value.size and np.issubdtype(value.dtype, np.floating):
                peak[name] = max(peak.get(name, 0.0), float(np.max(np.abs(value))))
    return sorted({outs[n] for n, v in peak.items() if v >= FP16_MAX / HEADROOM})


def _drop_cast_round_trips(model: onnx.ModelProto) -> None:
    """Join fp32 nodes that the converter separated by Cast(fp16) -> Cast(fp32), in place.

    The converter casts every output of a kept-fp32 node to fp16 and back, even when the next node is kept fp32 too:
    the LayerNorm square x^2 (up to 1e6 on scaseg-t's last encoder stage at 512x512) overflowed fp16 between Pow
    and ReduceMean, and the whole norm returned inf.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}

    def cast_to(node: onnx.NodeProto) -> int:
        return next((a.i for a in node.attribute if a.name == "to"), -1)

    bypass = {}
    for node in graph.node:
        if node.op_type == "Cast" and cast_to(node) == onnx.TensorProto.FLOAT and node.output[0] not in outputs:
            up = producer.get(node.input[0])
            if up is not None and up.op_type == "Cast" and cast_to(up) == onnx.TensorProto.FLOAT16:
                bypass[node.output[0]] = up.input[0]  # the fp32 value before the round trip
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in bypass:
                node.input[k] = bypass[name]
    while True:  # drop the Casts nothing reads any more
        used = {i for n in graph.node for i in n.input} | outputs
        keep = [n for n in graph.node if n.op_type != "Cast" or any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(keep)


def to_fp16(model: onnx.ModelProto, batches: Sequence[np.ndarray], output_kind: str = "logits"
            ) -> tuple[onnx.ModelProto, Fp16Report]:
    """Convert ``model`` to fp16 (float32 I/O) and measure its parity against fp32 on ``batches``."""
    hot = near_overflow(model, batches)
    fp16 = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(KEEP_FP32_OPS), node_block_list=hot,
    )
    _drop_cast_round_trips(fp16)
    ref, test = first_output(model), first_output(fp16)
    err, la, lc = 0.0, [], []
    for b in batches:
        a, c = ref(b), test(b)
        if output_kind == "labels":
            la.append(a)
            lc.append(c)
        else:
            err = max(err, float(np.max(np.abs(a.astype(np.float64) - c.astype(np.float64)))))
            la.append(np.argmax(a, axis=1))
            lc.append(np.argmax(c, axis=1))
    present = {n.op_type for n in model.graph.node}
    report = Fp16Report(err, label_agreement(la, lc) if la else 0.0, sorted(present & set(KEEP_FP32_OPS)), hot, len(batches))
    return fp16, report
