"""calibration/int8.py through make_precision: the cpu and tensorrt Q/DQ placements on an exported model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from calibration_models import H, W, info_of
from scaseg.calibration import int8
from scaseg.calibration.precision import make_precision
from scaseg.calibration.session import first_output, make_session
from scaseg.data.synth import render_scene


def _argmax_agreement(a: onnx.ModelProto, b: onnx.ModelProto) -> float:
    rgb, _ = render_scene(99, (H, W))
    x = ((rgb.astype(np.float32) - (123.675, 116.28, 103.53)) / (58.395, 57.12, 57.375)).transpose(2, 0, 1)[None]
    x = np.ascontiguousarray(x, dtype=np.float32)
    return float(np.mean(first_output(a)(x).argmax(1) == first_output(b)(x).argmax(1)))


def _zero_points_and_axes(model: onnx.ModelProto) -> tuple[set, set]:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zps, axes = set(), set()
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[n.input[2]]
            zps.add((str(zp.dtype), int(np.abs(zp).max())))
            if inits[n.input[1]].ndim == 1:
                axes.add(next(a.i for a in n.attribute if a.name == "axis"))
    return zps, axes


def test_int8_cpu_placement_fuses_into_ort_int8_kernels(fp32_onnx: Path, image_folder: Path, tmp_path: Path):
    out = tmp_path / "tiny.int8.onnx"
    summary = make_precision(str(fp32_onnx), str(out), "int8", calib_dir=str(image_folder), calib_num=8,
                             method="percentile", target="cpu", max_miou_drop=100.0)
    q = onnx.load(str(out))
    info = info_of(q)
    assert info.precision == "int8" and info.num_classes == 19
    cal = info.extra["calibration"]
    assert cal["method"] == "percentile" and cal["num_calib_images"] == 8 and cal["reference"] == "fp32 argmax"
    assert "kept_float_nodes" in cal and summary["kept_float_blocks"] == "none"
    zps, axes = _zero_points_and_axes(q)
    assert {z for z in zps if z[0] == "int8"} == {("int8", 0)}, "activation/weight zero points must be int8 0"
    # Symmetric everywhere: the int8 GELU's input (read by two DQs) is uint8 with zero point 128, the same levels as
    # int8 with zero point 0; its sigmoid is uint8 on [0, 1] with zero point 0.
    assert {z for z in zps if z[0] != "int8"} == {("int32", 0), ("uint8", 128), ("uint8", 0)}
    assert axes == {0, 1}, "per-channel weights: Conv on axis 0, MatMul (K, N) on axis 1"
    # Placement: erf-GELU fused, and in int8 wherever its input is quantized (all but the one after the float stem);
    # BatchNorms folded; the stem conv (3 channels in) float; of the depthwise convs only the 3x3 ones.
    producer = {o: n for n in q.graph.node for o in n.output}
    float_gelus = [n for n in q.graph.node if n.op_type == "Gelu"]
    assert not [n for n in q.graph.node if n.op_type in ("Erf", "BatchNormalization")] and len(float_gelus) == 1
    assert producer[float_gelus[0].input[0]].op_type == "Conv"
    assert int8.count_quantized(q)["Gelu"] == len([n for n in q.graph.node if n.op_type == "Sigmoid"]) >= 4
    # quantized: the weights are dequantized (a float conv may read the dequantized output of an int8 GELU)
    reads_int8 = {n.name: n.input[1] in producer and producer[n.input[1]].op_type == "DequantizeLinear"
                  for n in q.graph.node if n.op_type == "Conv"}
    stem = next(n for n in q.graph.node if n.op_type == "Conv")
    assert not reads_int8[stem.name]
    inits = {i.name: i for i in q.graph.initializer}

    def kernel(conv: onnx.NodeProto) -> tuple:
        w = producer[conv.input[1]].input[0] if conv.input[1] in producer else conv.input[1]
        return tuple(inits[w].dims[2:])

    dw = [n for n in q.graph.node if n.op_type == "Conv" and int8._attr(n, "group", 1) > 1]
    assert {kernel(n) for n in dw if reads_int8[n.name]} == {(3, 3)}
    assert {(1, 7), (7, 1), (1, 21)} <= {kernel(n) for n in dw if not reads_int8[n.name]}
    # ORT runs int8 kernels for every placed op: none is left as a float op reading dequantized weights (pure
    # overhead), the decoder's Concat runs on uint8, each int8 GELU is QLinearSigmoid + QLinearMul, and the residual
    # Adds are QLinearAdd.
    make_session(q, optimized_path=str(tmp_path / "opt.onnx"))
    opt = onnx.load(str(tmp_path / "opt.onnx")).graph
    made = {o: n for n in opt.node for o in n.output}
    consts = {i.name for i in opt.initializer}
    unfused = [n.name for n in opt.node if n.op_type in ("Conv", "MatMul", "Gemm", "FusedMatMul") and len(n.input) > 1
               and n.input[1] in made and made[n.input[1]].op_type == "DequantizeLinear"
               and made[n.input[1]].input[0] in consts]
    assert not unfused, f"Q/DQ units ORT did not fuse: {unfused}"
    ops = [n.op_type for n in opt.node]
    assert ops.count("QLinearConv") == int8.count_quantized(q)["Conv"]
    assert ops.count("QLinearMatMul") == int8.count_quantized(q)["MatMul"] and "QGemm" in ops
    assert "QLinearConcat" in ops and ops.count("Gelu") == 1 and "Sigmoid" not in ops
    assert ops.count("QLinearSigmoid") == int8.count_quantized(q)["Gelu"] <= ops.count("QLinearMul")
    assert ops.count("QLinearAdd") == int8.count_quantized(q)["Add"] > 0, "residual Adds after int8 ops are int8"
    assert _argmax_agreement(onnx.load(str(fp32_onnx)), q) > 0.8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left behind"
    # Weights are 7-bit, so ORT's fused uint8 x int8 kernels cannot saturate on AVX2 machines: the fused graph
    # computes what its own Q/DQ graph says.
    weights = [numpy_helper.to_array(inits[n.input[0]]) for n in q.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == TensorProto.INT8]
    assert weights and max(int(np.abs(w).max()) for w in weights) <= 63
    import onnxruntime as ort

    rgb, _ = render_scene(7, (H, W))
    x = np.ascontiguousarray(((rgb - (123.675, 116.28, 103.53)) / (58.395, 57.12, 57.375)).transpose(2, 0, 1)[None],
                             dtype=np.float32)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(q.SerializeToString(), plain, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    fused = first_output(q)(x)
    assert np.abs(fused - reference).max() < 0.05 * np.abs(reference).max()


def test_int8_tensorrt_placement_quantizes_only_weighted_op_inputs(fp32_onnx: Path, image_folder: Path, tmp_path: Path):
    out = tmp_path / "tiny.trt.int8.onnx"
    make_precision(str(fp32_onnx), str(out), "int8", calib_dir=str(image_folder), calib_num=8, method="minmax",
                   target="tensorrt", max_miou_drop=100.0)
    q = onnx.load(str(out))
    producer = {o: n for n in q.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in q.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for n in q.graph.node:  # pairs sit only on the inputs of weighted ops; the ops between them stay float
        if n.op_type == "QuantizeLinear":
            assert {c.op_type for c in consumers[n.output[0]]} == {"DequantizeLinear"}
        if n.op_type == "DequantizeLinear":
            assert {c.op_type for c in consumers[n.output[0]]} <= set(int8.WEIGHTED_OPS)
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    assert all(producer[c.input[1]].op_type == "DequantizeLinear" for c in convs)
    inits = {i.name: i for i in q.graph.initializer}
    biases = [inits[c.input[2]] for c in convs if len(c.input) > 2 and c.input[2] in inits]
    assert biases and all(b.data_type == TensorProto.FLOAT for b in biases), "TensorRT takes float biases"
    assert info_of(q).extra["calibration"]["target"].startswith("tensorrt")
    assert _argmax_agreement(onnx.load(str(fp32_onnx)), q) > 0.8
