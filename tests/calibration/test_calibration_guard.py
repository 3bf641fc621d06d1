"""calibration/guard.py: it scores what scaseg-bench scores, and keeps blocks float in order of sensitivity until the
mIoU drop is within budget."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime_models import make_onnx
from scaseg.calibration import data, int8
from scaseg.calibration.data import HeldOut
from scaseg.calibration.guard import block_of, miou, run_guard
from scaseg.calibration.ranges import collect_stats
from scaseg.calibration.session import first_output, runner
from scaseg.data.datasets import open_dataset
from scaseg.metadata import read_onnx_metadata
from scaseg.runtime.backends import open_backend
from scaseg.runtime.bench import evaluate
from scaseg.runtime.predictor import Predictor
from scaseg.runtime.preprocess import Geometry


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


COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255)], np.uint8)  # what the tiny model calls class 0, 1, 2


def _folder_dataset(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    """Images of 3x5-pixel colour blocks at their own sizes; labels the block colour, with 15% of pixels relabelled.

    Thin blocks and scattered wrong labels make the score depend on the resolution it is measured at.
    """
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        blocks = rng.integers(0, 3, size=(-(-h // 3), -(-w // 5)))
        cls = np.repeat(np.repeat(blocks, 3, axis=0), 5, axis=1)[:h, :w].astype(np.uint8)
        label = np.where(rng.random((h, w)) < 0.15, rng.integers(0, 3, size=(h, w)), cls).astype(np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / f"{i}.png"), cv2.cvtColor(COLOURS[cls], cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "labels" / f"{i}.png"), label)
    (root / "classes.txt").write_text("c0\nc1\nc2\n")
    return root


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_guard_miou_is_scaseg_bench_miou(tmp_path: Path, resize: str):
    model_path = make_onnx(tmp_path / "m.onnx", size=(32, 48), info_changes={"resize": resize})
    root = _folder_dataset(tmp_path / "ds", [(45, 50), (37, 91), (64, 40)])
    ds = open_dataset(root, kind="folder", split="val")

    with open_backend(str(model_path)) as backend:
        bench = 100.0 * evaluate(Predictor(backend), ds, progress=False)["miou"]

    model = onnx.load(str(model_path))
    info = read_onnx_metadata(model.metadata_props, model_path)
    held = data.heldout_data([data.Item(Path(p), ds, i) for i, p in enumerate(ds.image_paths)], info)
    run = first_output(model)
    guard = miou(held.to_source([run(b) for b in held.batches], info.num_classes), held.labels, info.num_classes)

    assert 20.0 < bench < 95.0, "the relabelled pixels must cost something, or the comparison proves little"
    assert guard == pytest.approx(bench, abs=1e-9)
    # Scored at the network size instead (labels resized down), the figure would differ: the convention matters here.
    small = [cv2.resize(y, (48, 32), interpolation=cv2.INTER_NEAREST) for y in held.labels]
    at_network = miou([run(b).argmax(1)[0] for b in held.batches], small, info.num_classes)
    if resize == "stretch":
        assert abs(at_network - bench) > 0.05
