"""calibration/fp16.py through make_precision: float32 I/O, the sensitive ops kept fp32, no cast round trips."""
from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto

from calibration_models import info_of
from scaseg.calibration.precision import make_precision


def test_fp16_keeps_io_float32_and_sensitive_ops_fp32(fp32_onnx: Path, tmp_path: Path):
    out = tmp_path / "tiny.fp16.onnx"
    summary = make_precision(str(fp32_onnx), str(out), "fp16", calib_dir=None)
    m = onnx.load(str(out))
    assert info_of(m).precision == "fp16" and "fp16" in info_of(m).extra
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in m.graph.initializer)
    # The exporter decomposes LayerNorm: its mean/variance reductions and square root, and the attention softmax,
    # must read float32 (via Casts), the convolutions float16.
    inferred = onnx.shape_inference.infer_shapes(m).graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.value_info) + list(inferred.input)}
    kept = [n for n in m.graph.node if n.op_type in ("ReduceMean", "Softmax", "Sqrt")]
    assert kept and all(types[n.input[0]] == TensorProto.FLOAT for n in kept)
    assert all(types[n.input[0]] == TensorProto.FLOAT16 for n in m.graph.node if n.op_type == "Conv")
    assert {"ReduceMean", "Softmax", "Sqrt"} <= set(summary["kept_fp32_ops"].split(", "))
    # Between two fp32 nodes the value stays fp32: no Cast(fp16) -> Cast(fp32) round trip (x^2 overflowed there).
    made = {o: n for n in m.graph.node for o in n.output}
    trips = [n.name for n in m.graph.node if n.op_type == "Cast" and made.get(n.input[0]) is not None
             and made[n.input[0]].op_type == "Cast"]
    assert not trips
    assert any(made[n.input[0]].op_type == "Pow" for n in m.graph.node if n.op_type == "ReduceMean")
    assert float(summary["argmax_agreement"].rstrip("%")) > 99.0
