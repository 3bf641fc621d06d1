"""Tiny ONNX segmentation models with scaseg metadata, built with onnx.helper for the runtime tests.

The "classifier" is a 1x1 convolution with identity weights over the normalised RGB channels: a pure red
pixel is class 0, green class 1, blue class 2 (further classes get zero weights and never win).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from scaseg.metadata import ModelInfo

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def conv_weights(num_classes: int) -> np.ndarray:
    w = np.zeros((num_classes, 3, 1, 1), dtype=np.float32)
    for c in range(min(3, num_classes)):
        w[c, c, 0, 0] = 1.0
    return w


def make_onnx(
    path: Path,
    *,
    num_classes: int = 3,
    size: Optional[tuple[int, int]] = (32, 48),
    batch: Optional[int] = 1,
    output: str = "logits",
    precision: str = "fp32",
    metadata: bool = True,
    info_changes: Optional[dict] = None,
) -> Path:
    """Write a model: images (B,3,H,W) -> Conv1x1 -> logits (B,C,H,W) [-> ArgMax -> labels (B,H,W)]."""
    h, w = size if size is not None else ("height", "width")
    b = batch if batch is not None else "batch"
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [b, 3, h, w])
    weight = conv_weights(num_classes)
    nodes, inits = [], []
    src = "images"
    if precision == "fp16":  # float32 I/O, fp16 inside, as scaseg-export writes fp16 models
        nodes.append(helper.make_node("Cast", ["images"], ["x16"], to=TensorProto.FLOAT16))
        src = "x16"
        weight = weight.astype(np.float16)
    inits.append(numpy_helper.from_array(weight, "W"))
    conv_out = "logits16" if precision == "fp16" else "logits"
    if precision == "int8":  # explicit Q/DQ on activations and weights, symmetric, zero points 0
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "xs"), numpy_helper.from_array(np.array(0, np.int8), "xz"),
                  numpy_helper.from_array(np.array(1 / 127, np.float32), "ws"), numpy_helper.from_array(np.array(0, np.int8), "wz")]
        nodes += [helper.make_node("QuantizeLinear", ["images", "xs", "xz"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xdq"]),
                  helper.make_node("QuantizeLinear", ["W", "ws", "wz"], ["wq"]),
                  helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wdq"])]
        nodes.append(helper.make_node("Conv", ["xdq", "wdq"], [conv_out]))
    else:
        nodes.append(helper.make_node("Conv", [src, "W"], [conv_out]))
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", ["logits16"], ["logits"], to=TensorProto.FLOAT))
    if output == "labels":
        nodes.append(helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0))
        y = helper.make_tensor_value_info("labels", TensorProto.INT64, [b, h, w])
    else:
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [b, num_classes, h, w])
    graph = helper.make_graph(nodes, "tiny_seg", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        info = ModelInfo(
            variant="tiny", num_classes=num_classes, input_size=size, dynamic_batch=batch is None,
            dynamic_spatial=size is None, batch=batch or 1, input_name="images",
            output_name="labels" if output == "labels" else "logits", output=output, precision=precision,
            class_names=[f"c{i}" for i in range(num_classes)],
        )
        if info_changes:
            info = info.replace(**info_changes)
        helper.set_model_props(model, {"scaseg": info.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def halves(h: int, w: int, left=RED, right=GREEN) -> np.ndarray:
    """RGB image: left half one colour, right half another."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = left
    img[:, w // 2:] = right
    return img


def halves_labels(h: int, w: int) -> np.ndarray:
    lab = np.zeros((h, w), np.uint8)
    lab[:, w // 2:] = 1
    return lab


def make_video(path: Path, frames: int = 6, size: tuple[int, int] = (48, 64), fps: float = 12.0) -> Path:
    """An mp4v (or MJPG for .avi) video whose every frame is red (left half) | green (right half)."""
    h, w = size
    fourcc = cv2.VideoWriter.fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    assert writer.isOpened()
    for _ in range(frames):
        writer.write(cv2.cvtColor(halves(h, w), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def run_main(main, args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """Call a console entry point in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["prog"] + [str(a) for a in args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def run_cli_subprocess(module: str, args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module] + [str(a) for a in args], capture_output=True, text=True, **kw)
