"""scaseg-export --input uint8: raw-frame graphs of the shipped scaseg-t-synth, their labels against the numpy path,
their fp16/int8 conversions (both Q/DQ placements), ONNX Runtime, OpenVINO and TensorRT-RTX's parser and builder.

The agreement asserted (>= 99.9% of pixels) is the one docs/export.md states, made by the same functions as
benchmarks/bench_raw_input.py; the runtime side (Predictor, backends, the commands) is
tests/runtime/test_raw_input_runtime.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from paths import benchmark

import scaseg
from badinput import refused
from scaseg.data.synth import render_scene
from scaseg.errors import ScasegError
from scaseg.metadata import read_onnx_metadata
from scaseg.runtime.backends import open_backend
from scaseg.runtime.predictor import Predictor

SOURCE = (270, 480)  # frames; the network runs at the checkpoint's 192x384
NETWORK = (192, 384)
TARGET = 0.999

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shipped() -> tuple:
    return scaseg.load_model(scaseg.weights_path("scaseg-t-synth"))


def _export(model, info, path: Path, source=SOURCE, network=NETWORK, head: str = "labels") -> Path:
    from scaseg.export.onnx_export import ExportOptions, to_onnx

    proto, _ = to_onnx(model, info, ExportOptions(imgsz=network, output=head, input_type="uint8", source_size=source))
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def raw_labels(shipped: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(*shipped, tmp_path_factory.mktemp("raw") / "raw.onnx")


def _frames(count: int, size=SOURCE) -> list[np.ndarray]:
    return [render_scene(2000 + i, size)[0] for i in range(count)]


def test_the_graph_takes_uint8_frames_and_answers_uint8_labels_at_the_source_size(raw_labels: Path) -> None:
    model = onnx.load(str(raw_labels))
    info = read_onnx_metadata(model.metadata_props, raw_labels)
    assert (info.input_type, info.layout, info.color, info.input_size, info.network_size) == (
        "uint8", "NHWC", "RGB", SOURCE, NETWORK)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, *SOURCE, 3]
    assert out.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, *SOURCE]


def test_labels_agree_with_the_numpy_path_of_the_float_model(raw_labels: Path, shipped: tuple) -> None:
    from scaseg.export.parity import check_parity

    model, _ = shipped
    info = read_onnx_metadata(onnx.load(str(raw_labels)).metadata_props, raw_labels)
    report = check_parity(str(raw_labels), model, info, images=3)
    # Against PyTorch running the same in-graph preprocessing: the export's pass/fail.
    assert report.ok and report.agreement > 0.9999, report.summary()
    # Against runtime/preprocess.py (OpenCV resize) + the float model + runtime/predictor.py's label upsampling.
    assert report.numpy_agreement is not None and report.numpy_agreement >= TARGET, report.summary()
    # The same through ONNX Runtime on both sides (the raw graph's own network part fed by the numpy path): the
    # graph resizes as OpenCV does, bit for bit, so every label agrees.
    frames = _frames(3)
    assert benchmark("bench_raw_input").core_agreement(str(raw_labels), frames) == 1.0


# (source, network): down in both axes, the exact halving (OpenCV's area path: the same sums), odd sizes, 4K, one
# axis up; RawFrames' resize must give cv2.resize(INTER_LINEAR)'s uint8 image bit for bit.
EXACT_SIZES = [((1080, 1920), (192, 384)), ((384, 768), (192, 384)), ((333, 517), (128, 256)),
               ((2160, 3840), (512, 1024)), ((192, 300), (192, 384)), ((101, 384), (192, 384))]


def _resized(source: tuple[int, int], network: tuple[int, int], frame: np.ndarray, tmp_path: Path) -> tuple:
    """(cv2.resize's image, RawFrames' in PyTorch, RawFrames' through ONNX Runtime), float HWC on the 0..255 scale."""
    import cv2
    import onnxruntime as ort
    import torch

    from scaseg.export.raw_input import RawFrames

    pre = RawFrames(network, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), source).eval()
    x = torch.from_numpy(frame)[None]
    with torch.no_grad():
        ours = pre(x)[0].permute(1, 2, 0).numpy()
    path = tmp_path / "pre.onnx"
    torch.onnx.export(pre, (x,), str(path), opset_version=17, input_names=["frames"], output_names=["image"],
                      dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph = session.run(None, {"frames": frame[None]})[0][0].transpose(1, 2, 0)
    return cv2.resize(frame, network[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32), ours, graph


@pytest.mark.parametrize("source, network", EXACT_SIZES)
def test_the_graph_resizes_as_opencv_bit_for_bit(source, network, tmp_path: Path) -> None:
    frames = [np.random.default_rng(1).integers(0, 256, (*source, 3), dtype=np.uint8), _frames(1, source)[0]]
    for frame in frames:
        reference, ours, graph = _resized(source, network, np.ascontiguousarray(frame), tmp_path)
        assert np.array_equal(ours, reference) and np.array_equal(graph, reference)


def test_a_frame_shorter_than_the_network_differs_from_opencv_by_one_level_at_most(tmp_path: Path) -> None:
    """Upsampling rows while resampling columns, OpenCV 5.1 rounds a few pixels otherwise (docs/export.md)."""
    frame = np.random.default_rng(2).integers(0, 256, (150, 600, 3), dtype=np.uint8)
    reference, ours, graph = _resized((150, 600), (192, 384), frame, tmp_path)
    assert np.array_equal(ours, graph)
    off = np.abs(ours - reference)
    assert off.max() <= 1 and (off > 0).mean() < 0.005


def test_openvino_answers_as_onnx_runtime(raw_labels: Path) -> None:
    pytest.importorskip("openvino")
    frame = _frames(1)[0]
    a = Predictor(open_backend(str(raw_labels), "onnxruntime"))(frame)
    b = Predictor(open_backend(str(raw_labels), "openvino"))(frame)
    assert a.dtype == b.dtype == np.uint8 and (a == b).mean() > 0.9999


def test_a_letterbox_model_is_refused_in_one_sentence(shipped: tuple, tmp_path: Path) -> None:
    model, info = shipped
    with pytest.raises(ScasegError, match="^--input uint8 stretches frames .* resize policy is letterbox; export it "
                                          "with --input float$"):
        _export(model, info.replace(resize="letterbox"), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("args, message", [
    (["--input", "uint8"], "--input uint8 needs --source-size HxW"),
    (["--input", "uint8", "--source-size", "1080x1920", "--format", "triton"], "--format triton serves float inputs"),
])
def test_bad_raw_input_options_are_refused_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(Path(scaseg.weights_path("scaseg-t-synth")).read_bytes())
    refused("scaseg-export", ["m.pth", *args], tmp_path, expect=message, timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]


def test_an_onnx_source_keeps_its_own_input(tmp_path: Path) -> None:
    from runtime_models import make_onnx

    make_onnx(tmp_path / "m.onnx")
    refused("scaseg-export", ["m.onnx", "--format", "engine", "--input", "uint8", "--source-size", "64"], tmp_path,
            expect="--input and --source-size shape an export from a checkpoint; an ONNX model keeps its own input",
            timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("input_type, source, dynamic, message", [
    ("float", "1080x1920", None, "--source-size is for --input uint8"),
    ("uint8", "1080x1920", "spatial", "--dynamic spatial is for --input float"),
    ("uint8", "9000x100", None, "--source-size 9000x100 is too large"),
    ("uint8", "12x", None, "--source-size '12x' is not a size"),
])
def test_the_graph_options_refuse_what_a_raw_input_cannot_be(input_type: str, source: str, dynamic: str | None,
                                                            message: str) -> None:
    from scaseg.export.cli import _graph_options

    with pytest.raises(ScasegError, match=message.replace("(", r"\(")):
        _graph_options(None, 1, dynamic, 17, "decomposed", None, "labels", True, "auto", input_type, source, "onnx")


@pytest.mark.slow
def test_fp16_and_both_int8_placements_keep_the_raw_input_and_build_with_tensorrt_rtx(
        shipped: tuple, image_folder: Path, tmp_path: Path) -> None:
    """Calibration feeds the raw graph frames at its source size; the converted graphs still take uint8 frames and
    answer uint8 labels, on ONNX Runtime and OpenVINO; TensorRT-RTX parses and builds each (no GPU needed)."""
    from scaseg.calibration.precision import make_precision
    from scaseg.runtime.tensorrt import installed

    source, network = (135, 240), (96, 192)  # smaller: two calibrations
    fp32 = _export(*shipped, tmp_path / "raw.onnx", source, network)
    frames = _frames(2, source)
    outputs = {"fp32": fp32}
    for name, precision, target in (("fp16", "fp16", "cpu"), ("int8-cpu", "int8", "cpu"),
                                    ("int8-tensorrt", "int8", "tensorrt")):
        outputs[name] = tmp_path / f"raw.{name}.onnx"
        make_precision(str(fp32), str(outputs[name]), precision, calib_dir=str(image_folder), calib_num=6,
                       target=target, max_miou_drop=100.0)
    for name, path in outputs.items():
        model = onnx.load(str(path))
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8, name
        assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8, name
        ort_labels = Predictor(open_backend(str(path), "onnxruntime"))(frames[0])
        ov_labels = Predictor(open_backend(str(path), "openvino"))(frames[0])
        assert ort_labels.shape == ov_labels.shape == source and ort_labels.dtype == np.uint8, name
        assert (ort_labels == ov_labels).mean() > 0.99, name
        # Against the numpy path of its own network (same weights and scales): only the preprocessing moved.
        assert benchmark("bench_raw_input").core_agreement(str(path), frames) > 0.99, name
    if installed.find_tensorrt("rtx") is None:
        pytest.skip("TensorRT-RTX is not installed: the engine builds are not checked here")
    from scaseg.export.engine.builder import build_engine
    from scaseg.runtime.tensorrt.engine_info import side_file

    for name, precision in (("fp32", "fp32"), ("fp16", "fp16"), ("int8-tensorrt", "int8")):
        engine = tmp_path / f"{name}.engine"
        build_engine(str(outputs[name]), str(engine), precision=precision, tensorrt="rtx",
                     compute_capabilities=["8.6"], report=lambda line: None)
        info = read_onnx_metadata({"scaseg": Path(side_file(str(engine))).read_text()}, engine)
        assert (info.input_type, info.input_size, info.network_size, info.layout) == ("uint8", source, network, "NHWC")
