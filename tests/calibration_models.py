"""What the calibration tests share: a tiny scaseg-t exported as scaseg-export does it, and a user's image folder.

The fixtures ``fp32_onnx`` and ``image_folder`` (tests/conftest.py) build them once per test session.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx

from scaseg.data.synth import render_scene
from scaseg.metadata import ModelInfo, read_onnx_metadata

H, W = 64, 128


def info_of(model: onnx.ModelProto) -> ModelInfo:
    """The scaseg metadata of an ONNX model."""
    return read_onnx_metadata(model.metadata_props, model.graph.name)


def export_tiny(path: Path) -> Path:
    """A tiny scaseg-t exported exactly as scaseg-export does it (simplified, LayerNorm decomposed, metadata)."""
    import torch

    import scaseg
    from scaseg.export.onnx_export import ExportOptions, to_onnx

    torch.manual_seed(0)
    model = scaseg.build("scaseg-t", num_classes=19).eval()
    proto, _ = to_onnx(model, ModelInfo(variant="scaseg-t", num_classes=19, input_size=(H, W)), ExportOptions(imgsz=(H, W)))
    onnx.save(proto, str(path))
    return path


def write_image_folder(folder: Path) -> Path:
    """Street scenes of mixed sizes and channel counts (grey, RGBA, 16-bit), as a user's folder would be."""
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
