"""Raw-frame models on the runtime: the metadata field, the backends' uint8 input, the Predictor's pass-through, and
scaseg-infer / scaseg-bench taking such a model with no new flag.

The model is built with onnx.helper as scaseg-export --input uint8 lays it out: uint8 frames (B, H, W, 3) -> Cast ->
Transpose -> Resize (linear, to the network size) -> a 1x1 convolution with identity weights (red is class 0,
green class 1) -> ArgMax -> Resize (nearest, back to the source size) -> uint8 labels (B, H, W). The real exporter's
graphs are tested in tests/export/test_raw_input.py.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from badinput import run
from runtime_models import conv_weights, halves, halves_labels
from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo
from scaseg.runtime.backends import open_backend
from scaseg.runtime.predictor import Predictor

SOURCE, NETWORK = (24, 32), (12, 16)


def make_raw_onnx(path: Path, source: tuple[int, int] = SOURCE, network: tuple[int, int] = NETWORK) -> Path:
    """A raw-frame labels graph with scaseg metadata (input_type uint8)."""
    (sh, sw), (nh, nw) = source, network
    consts = [numpy_helper.from_array(conv_weights(3), "W"),
              numpy_helper.from_array(np.array([1, 3, nh, nw], np.int64), "net"),
              numpy_helper.from_array(np.array([1, 1, sh, sw], np.int64), "src"),
              numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Resize", ["nchw", "", "", "net"], ["resized"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Conv", ["resized", "W"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["am"], axis=1, keepdims=1),
        helper.make_node("Cast", ["am"], ["amf"], to=TensorProto.FLOAT),
        helper.make_node("Resize", ["amf", "", "", "src"], ["up"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Squeeze", ["up", "axis1"], ["ups"]),
        helper.make_node("Cast", ["ups"], ["output"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(nodes, "raw_seg", [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, sh, sw, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.UINT8, [1, sh, sw])], initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    info = ModelInfo(variant="tiny", num_classes=3, input_size=source, output="labels", layout="NHWC",
                     input_type="uint8", network_size=network, mean=(0, 0, 0), std=(1, 1, 1))
    helper.set_model_props(model, {"scaseg": info.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def raw_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_raw_onnx(tmp_path_factory.mktemp("raw") / "raw.onnx")


# --- the metadata field ------------------------------------------------------------------------------------------


def test_old_metadata_without_the_field_reads_as_a_float_input() -> None:
    old = ModelInfo(variant="tiny", num_classes=3, input_size=(8, 8)).to_dict()
    del old["input_type"], old["network_size"]
    info = ModelInfo.from_dict(old)
    assert info.input_type == "float" and info.network_size is None and info.layout == "NCHW"


@pytest.mark.parametrize("changes, message", [
    ({"input_type": "uint16"}, "input_type must be one of float, uint8"),
    ({"input_type": "uint8"}, "network_size must be [height, width]"),
    ({"input_type": "uint8", "network_size": [8, 8], "layout": "NCHW"}, "a uint8 input is NHWC and stretched"),
    ({"input_type": "uint8", "network_size": [8, 8], "layout": "NHWC", "resize": "letterbox"}, "NHWC and stretched"),
    ({"input_type": "uint8", "network_size": [8, 8], "layout": "NHWC", "dynamic_spatial": True}, "fixed input_size"),
    ({"input_type": "uint8", "network_size": [8, 8], "layout": "NHWC", "input_size": None}, "fixed input_size"),
    ({"network_size": [8, 8]}, "network_size must be null for a float input"),
])
def test_metadata_refuses_a_raw_input_it_cannot_describe(changes: dict, message: str) -> None:
    d = {**ModelInfo(variant="tiny", num_classes=3, input_size=(8, 8)).to_dict(), **changes}
    with pytest.raises(ScasegError, match="^the model metadata of m.onnx is invalid: .*" + message.replace("[", r"\[")):
        ModelInfo.from_dict(d, "m.onnx")


def test_raw_metadata_round_trips() -> None:
    info = ModelInfo(variant="tiny", num_classes=3, input_size=(1080, 1920), layout="NHWC", input_type="uint8",
                     network_size=[512, 1024])
    again = ModelInfo.from_json(info.to_json())
    assert again == info and again.network_size == (512, 1024)


# --- backends and the Predictor ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backends_take_uint8_frames_nhwc(raw_model: Path, backend: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    be = open_backend(str(raw_model), backend)
    meta = be.get_input_metadata()
    assert meta.dtype == np.uint8 and meta.shape == (1, *SOURCE, 3)
    assert be.fixed_size == SOURCE and be.fixed_batch == 1
    frame = halves(*SOURCE)
    out = be.infer(frame[None])
    assert out.dtype == np.uint8 and out.shape == (1, *SOURCE)
    np.testing.assert_array_equal(out[0], halves_labels(*SOURCE))


def test_predictor_hands_the_frame_through_and_returns_the_graphs_labels(raw_model: Path) -> None:
    predictor = Predictor(open_backend(str(raw_model), "onnxruntime"))
    assert predictor.size == SOURCE
    frame = halves(*SOURCE)
    tensor, geom = predictor.prepare(frame)
    assert tensor is frame and geom.src_hw == geom.dst_hw == SOURCE  # no copy, no resize, no float
    out = predictor.run([tensor])
    assert out.dtype == np.uint8 and out.shape == (1, *SOURCE)
    labels = predictor.finish(out[0], geom)
    assert labels.dtype == np.uint8 and np.shares_memory(labels, out)  # taken as it is
    np.testing.assert_array_equal(labels, halves_labels(*SOURCE))


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_a_frame_of_another_size_is_resized_on_the_host_and_answered_at_its_size(raw_model: Path, resize: str) -> None:
    predictor = Predictor(open_backend(str(raw_model), "onnxruntime"), resize=resize)
    frame = halves(48, 96)
    tensor, geom = predictor.prepare(frame)
    assert tensor.dtype == np.uint8 and tensor.shape == (*SOURCE, 3) and geom.src_hw == (48, 96)
    labels = predictor(frame)
    assert labels.shape == (48, 96) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, halves_labels(48, 96))


def test_a_graph_whose_input_is_not_nhwc_frames_is_refused(tmp_path: Path) -> None:
    path = make_raw_onnx(tmp_path / "raw.onnx")
    model = onnx.load(str(path))
    info = ModelInfo.from_json(model.metadata_props[0].value)
    model.metadata_props[0].value = info.replace(input_size=(32, 24)).to_json()
    onnx.save(model, str(path))
    with pytest.raises(ScasegError, match=r"says input size \(32, 24\) but the graph takes \(24, 32\)"):
        open_backend(str(path), "onnxruntime")


# --- the commands, no new flag -------------------------------------------------------------------------------------


def test_infer_and_bench_take_a_raw_frame_model(raw_model: Path, tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), halves(48, 64)[..., ::-1])
    proc = run("scaseg-infer", ["a.png", "-m", str(raw_model), "--output-kind", "labels", "-o", "lab.png", "-q"],
               tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "lab.png"), cv2.IMREAD_UNCHANGED), halves_labels(48, 64))
    proc = run("scaseg-bench", [str(raw_model), "-n", "2", "--warmup", "1", "-q"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"1x{SOURCE[0]}x{SOURCE[1]} uint8" in proc.stdout
