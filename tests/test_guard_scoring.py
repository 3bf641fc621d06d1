"""The INT8 guard scores what scaseg-bench scores: the same mIoU on the same labelled images, any resize policy."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from runtime_models import make_onnx
from scaseg.calibration import data
from scaseg.calibration.guard import miou
from scaseg.calibration.session import first_output
from scaseg.data.datasets import open_dataset
from scaseg.metadata import METADATA_KEY, ModelInfo
from scaseg.runtime.backends import open_backend
from scaseg.runtime.bench import evaluate
from scaseg.runtime.predictor import Predictor

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
    info = ModelInfo.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
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
