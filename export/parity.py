"""Proof after export: the ONNX file on ONNX Runtime against the PyTorch model, on synthetic street scenes.

Reported: max |logit difference| and argmax pixel agreement. A logits graph fails when the max difference exceeds
the tolerance. A labels graph (argmax inside) has no logits to compare, so it fails when a pixel whose PyTorch
top-2 margin exceeds 2 x tolerance gets another label: logits within the tolerance cannot flip such a pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo
from scaseg.runtime.preprocess import preprocess
from scaseg.data.synth import render_scene

DEFAULT_TOLERANCE = 1e-3


@dataclass
class ParityReport:
    """ONNX Runtime vs PyTorch on ``images`` inputs of ``size``."""

    images: int
    size: tuple[int, int]
    output: str
    max_abs: Optional[float]  # None for a labels graph
    agreement: float  # fraction of pixels whose argmax matches
    confident_mismatches: int  # labels graph: flipped pixels whose PyTorch top-2 margin exceeds 2 x tolerance
    tolerance: float

    @property
    def ok(self) -> bool:
        if self.output == "labels":
            return self.confident_mismatches == 0
        return self.max_abs is not None and self.max_abs <= self.tolerance

    def summary(self) -> str:
        err = f"max |logit diff| {self.max_abs:.3g}" if self.max_abs is not None else "labels graph (no logits)"
        verdict = "PASS" if self.ok else "FAIL"
        text = (f"parity vs PyTorch on {self.images} synthetic scene(s) at {self.size[0]}x{self.size[1]}: {err}, "
                f"argmax agreement {100 * self.agreement:.4f}% (tolerance {self.tolerance:g}) {verdict}")
        if self.output == "labels" and self.confident_mismatches:
            text += f"; {self.confident_mismatches} confidently-labelled pixel(s) changed"
        return text


def scene_batch(count: int, size: tuple[int, int], info: ModelInfo, seed: int = 0) -> np.ndarray:
    """``count`` synthetic street scenes, preprocessed as the runtime does: float32 (count, 3, H, W)."""
    images = [preprocess(render_scene(seed + i, size)[0], size, info.mean, info.std, info.resize)[0] for i in range(count)]
    return np.stack(images).astype(np.float32)


def check_parity(
    onnx_path: str,
    model: nn.Module,
    info: ModelInfo,
    *,
    images: int = 2,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
) -> ParityReport:
    """Run ``images`` scenes through the ONNX file (ONNX Runtime CPU) and the eval-mode model; compare."""
    import onnxruntime as ort

    if images < 1:
        raise ScasegError(f"--parity-images must be at least 1, got {images}")
    if tolerance < 0:
        raise ScasegError(f"--tolerance must be >= 0, got {tolerance}")
    size = tuple(info.input_size or (512, 512))
    batch = 1 if info.dynamic_batch else int(info.batch)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    model = model.eval()
    max_abs, agree, total, flipped = 0.0, 0, 0, 0
    runs = -(-images // batch)
    for r in range(runs):
        x = scene_batch(batch, size, info, seed + r * batch)  # type: ignore[arg-type]
        got = session.run([info.output_name], {info.input_name: x})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).float().numpy()
        ref_labels = ref.argmax(axis=1)
        if info.output == "labels":
            labels = got.astype(np.int64)
            top2 = np.sort(ref, axis=1)[:, -2:]
            margin = top2[:, 1] - top2[:, 0]
            flipped += int(((labels != ref_labels) & (margin > 2 * tolerance)).sum())
        else:
            max_abs = max(max_abs, float(np.abs(got - ref).max()))
            labels = got.argmax(axis=1)
        agree += int((labels == ref_labels).sum())
        total += labels.size
    return ParityReport(
        images=runs * batch, size=(int(size[0]), int(size[1])), output=info.output,
        max_abs=None if info.output == "labels" else max_abs, agreement=agree / max(1, total),
        confident_mismatches=flipped, tolerance=float(tolerance),
    )
