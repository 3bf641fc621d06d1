"""Reduced precision through its public entry point: make_precision (int8 / fp16), the cache, the guard, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scaseg.calibration import int8
from scaseg.calibration.api import make_precision
from scaseg.calibration.data import HeldOut
from scaseg.calibration.guard import block_of, run_guard
from scaseg.calibration.ranges import BINS, collect_stats
from scaseg.calibration.session import first_output, make_session, runner
from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo
from scaseg.runtime.preprocess import Geometry
from scaseg.data.synth import render_scene

H, W = 64, 128


def _info(model: onnx.ModelProto) -> ModelInfo:
    return ModelInfo.from_json({p.key: p.value for p in model.metadata_props}["scaseg"])


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny scaseg-t exported exactly as scaseg-export does it (simplified, LayerNorm decomposed, metadata)."""
    torch = pytest.importorskip("torch")
    import scaseg
    from scaseg.export.onnx_export import ExportOptions, to_onnx

    torch.manual_seed(0)
    model = scaseg.build("scaseg-t", num_classes=19).eval()
    proto, _ = to_onnx(model, ModelInfo(variant="scaseg-t", num_classes=19, input_size=(H, W)), ExportOptions(imgsz=(H, W)))
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Street scenes of mixed sizes and channel counts (grey, RGBA, 16-bit), as a user's folder would be."""
    folder = tmp_path_factory.mktemp("calib")
    for i in range(10):
        rgb, _ = render_scene(i, (48 + 8 * i, 96 + 16 * i))
        image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if i == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif i == 5:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
        elif i == 7:
            image = image.astype(np.uint16) * 257
        cv2.imwrite(str(folder / f"frame_{i:02d}.png"), image)
    return folder


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
    info = _info(q)
    assert info.precision == "int8" and info.num_classes == 19
    cal = info.extra["calibration"]
    assert cal["method"] == "percentile" and cal["num_calib_images"] == 8 and cal["reference"] == "fp32 argmax"
    assert "kept_float_nodes" in cal and summary["kept_float_blocks"] == "none"
    zps, axes = _zero_points_and_axes(q)
    assert {z for z in zps if z[0] == "int8"} == {("int8", 0)}, "activation/weight zero points must be int8 0"
    assert all(z[1] == 0 for z in zps), "every zero point is 0 (symmetric), int32 biases included"
    assert axes == {0, 1}, "per-channel weights: Conv on axis 0, MatMul (K, N) on axis 1"
    # Placement: erf-GELU fused; the stem conv (3 channels in) float; of the depthwise convs only the 3x3 ones.
    assert not [n for n in q.graph.node if n.op_type == "Erf"] and [n for n in q.graph.node if n.op_type == "Gelu"]
    producer = {o: n for n in q.graph.node for o in n.output}
    reads_int8 = {n.name: n.input[0] in producer and producer[n.input[0]].op_type == "DequantizeLinear"
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
    # overhead), the decoder's Concat runs on uint8, and the GELU is one node.
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
    assert "QLinearConcat" in ops and "Gelu" in ops
    assert _argmax_agreement(onnx.load(str(fp32_onnx)), q) > 0.8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left behind"


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
    assert _info(q).extra["calibration"]["target"].startswith("tensorrt")
    assert _argmax_agreement(onnx.load(str(fp32_onnx)), q) > 0.8


def test_statistics_cache_is_reused_and_refused_for_other_preprocessing(fp32_onnx: Path, image_folder: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    kw = dict(calib_dir=str(image_folder), calib_num=8, target="tensorrt", max_miou_drop=100.0, cache_dir=str(cache))
    assert make_precision(str(fp32_onnx), str(tmp_path / "a.onnx"), "int8", method="minmax", **kw)["cache"] == "miss"
    assert make_precision(str(fp32_onnx), str(tmp_path / "b.onnx"), "int8", method="entropy", **kw)["cache"] == "hit"
    other = tmp_path / "other" / fp32_onnx.name  # same name, other normalisation
    other.parent.mkdir()
    proto = onnx.load(str(fp32_onnx))
    for p in proto.metadata_props:
        if p.key == "scaseg":
            p.value = _info(proto).replace(mean=(0.0, 0.0, 0.0)).to_json()
    onnx.save(proto, str(other))
    status = make_precision(str(other), str(tmp_path / "c.onnx"), "int8", method="minmax", **kw)["cache"]
    assert status.startswith("refused") and "preprocessing" in status


def _fragile_model() -> onnx.ModelProto:
    """x (1, 2, 4, 8): channel 0 has a 1000 spike, channel 1 carries the class as a sign of +-0.5.

    /net/fragile (1x1 conv) drops channel 0: quantizing its input with the spike's range zeroes the signal.
    /net/robust maps the clean channel to two logits and is harmless to quantize.
    """
    w1 = np.array([[0, 0], [0, 1]], np.float32).reshape(2, 2, 1, 1)
    w2 = np.array([[0, 1], [0, -1]], np.float32).reshape(2, 2, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="/net/fragile/Conv"),
             helper.make_node("Conv", ["h", "w2"], ["logits"], name="/net/robust/Conv")]
    graph = helper.make_graph(nodes, "fragile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 4, 8])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_guard_keeps_the_sensitive_block_float():
    model = _fragile_model()
    rng = np.random.default_rng(0)
    batches, labels = [], []
    for _ in range(4):
        x = np.zeros((1, 2, 4, 8), np.float32)
        sign = rng.choice([-1.0, 1.0], size=(4, 8))
        x[0, 1] = 0.5 * sign
        x[0, 0, 0, 0] = 1000.0
        batches.append(x)
        labels.append((sign < 0).astype(np.uint8)[None])
    names = int8.tensors_to_calibrate(model)
    thresholds = collect_stats(runner(model, names), batches, names).thresholds("minmax")
    geometry = [Geometry((4, 8), (4, 8), (4, 8))] * len(batches)
    res = run_guard(model, thresholds, "tensorrt", HeldOut(batches, geometry, [y[0] for y in labels]), 2, "logits",
                    max_miou_drop=1.0)
    assert res.miou_fp32 == pytest.approx(100.0)
    assert res.miou_int8_all < 90.0, "quantizing everything must hurt, or the test proves nothing"
    assert res.ranking[0][0] == "/net/fragile"
    assert res.kept_float_blocks == ["/net/fragile"] and res.kept_float_nodes == ["/net/fragile/Conv"]
    assert res.miou_int8 == pytest.approx(100.0)
    assert int8.count_quantized(res.model) == {"Conv": 1}
    # Blocks of an exported model: scaseg-export traces the network inside a module named "model".
    assert block_of("/model/backbone/block2.1/attn/proj_1/Conv") == "/model/backbone/block2.1"
    assert block_of("/model/decode_head/fuse/fuse.0/Conv") == "/model/decode_head/fuse"
    assert block_of("Gemm_19") == "Gemm_19"


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


def test_ranges_methods_order_on_a_heavy_tailed_tensor():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200_000).astype(np.float32)
    x[:20] = 40.0  # rare outliers
    stats = collect_stats(lambda b: {"t": b}, [x[:100_000], x[100_000:]], ["t"])
    assert stats.hist.shape == (1, BINS) and stats.hist.sum() == x.size
    mm, pc, en = (stats.thresholds(m)["t"] for m in ("minmax", "percentile", "entropy"))
    assert mm == pytest.approx(40.0)
    assert 3.0 < pc < mm and 2.0 < en < mm, (pc, en)


def test_fp16_keeps_io_float32_and_sensitive_ops_fp32(fp32_onnx: Path, tmp_path: Path):
    out = tmp_path / "tiny.fp16.onnx"
    summary = make_precision(str(fp32_onnx), str(out), "fp16", calib_dir=None)
    m = onnx.load(str(out))
    assert _info(m).precision == "fp16" and "fp16" in _info(m).extra
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


def test_bad_input_gives_one_sentence_and_writes_nothing(fp32_onnx: Path, tmp_path: Path):
    out = tmp_path / "never.onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        cv2.imwrite(str(few / f"{i}.png"), render_scene(i, (32, 64))[0])
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for i in range(7):
        cv2.imwrite(str(corrupt / f"{i}.png"), render_scene(i, (32, 64))[0])
    (corrupt / "3.png").write_bytes(b"not a png")
    bare = tmp_path / "bare.onnx"
    proto = onnx.load(str(fp32_onnx))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    text = tmp_path / "text.onnx"
    text.write_text("hello")
    cases = [
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=str(empty)), "holds no images"),
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=str(few)), "at least 6"),
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=str(tmp_path / "missing")), "not found"),
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=str(corrupt)), "3.png"),
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=None), "--calib"),
        (dict(fp32_onnx=str(bare), calib_dir=str(few)), "no scaseg metadata"),
        (dict(fp32_onnx=str(text), calib_dir=str(few)), "not an ONNX model"),
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=str(few), method="kl"), "calibration method"),
        (dict(fp32_onnx=str(fp32_onnx), calib_dir=str(few), target="gpu"), "int8 target"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ScasegError, match=words) as err:
            make_precision(out_path=str(out), precision="int8", **kwargs)
        assert "\n" not in str(err.value)
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]
    with pytest.raises(ScasegError, match="precision"):
        make_precision(str(fp32_onnx), str(out), "int4", calib_dir=None)
    int8_model = tmp_path / "already.onnx"
    proto = onnx.load(str(fp32_onnx))
    for p in proto.metadata_props:
        if p.key == "scaseg":
            p.value = json.dumps({**json.loads(p.value), "precision": "int8"})
    onnx.save(proto, str(int8_model))
    with pytest.raises(ScasegError, match="already int8"):
        make_precision(str(int8_model), str(out), "fp16", calib_dir=None)
