"""Proof after export: the ONNX file on ONNX Runtime against the PyTorch model, on synthetic street scenes.

Reported: max |logit difference| and argmax pixel agreement. A logits graph fails when the max difference exceeds
the tolerance. A labels graph (argmax inside) has no logits to compare, so it fails when a pixel whose PyTorch
top-2 margin exceeds 2 x tolerance gets another label: logits within the tolerance cannot flip such a pixel.

A grid export (sca-op grid) is checked against PyTorch running the same grid (that is the pass/fail above), and also
compared with exact attention: max |logit difference| and label agreement, printed beside it, and the measure of the
approximation itself (the G rule in export/sca.py keeps that agreement at >= 99.99%).

A raw-frame export (``--input uint8``) is fed the scenes as uint8 frames at its source size and checked against
PyTorch running the same in-graph preprocessing (export/raw_input.py); its labels are also compared with the float
model on the runtime's numpy path (OpenCV resize, normalisation, argmax, labels back to the frame's size), printed.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from torch import nn

from scaseg.errors import ScasegError
from scaseg.export.sca import grid_points_for, measure_spread
from scaseg.metadata import ModelInfo
from scaseg.models.decoder import StripAttentionCore, set_grid_points, set_query_chunk
from scaseg.export.raw_input import numpy_path_labels, reference_logits
from scaseg.runtime.preprocess import preprocess, resize_nearest
from scaseg.data.metrics import label_agreement
from scaseg.data.synth import render_scene

DEFAULT_TOLERANCE = 1e-3
# The exact reference of a grid parity check runs in query slices of this many rows: grid exports are for sizes where
# the whole N x M attention matrix would not fit (1 GiB per copy at 1024x2048).
EXACT_REFERENCE_CHUNK = 8192


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
    grid_points: Optional[int] = None  # a grid export: its G; the two fields below compare it with exact attention
    exact_max_abs: Optional[float] = None  # ONNX vs PyTorch with exact attention (None for a labels graph)
    exact_agreement: Optional[float] = None
    nonfinite: int = 0  # NaN/Inf values in either output: a failure whatever the difference
    numpy_agreement: Optional[float] = None  # a raw-frame graph: its labels vs the float model on the numpy path

    @property
    def ok(self) -> bool:
        if self.nonfinite:
            return False
        if self.output == "labels":
            return self.confident_mismatches == 0
        return self.max_abs is not None and self.max_abs <= self.tolerance

    def summary(self) -> str:
        err = f"max |logit diff| {self.max_abs:.3g}" if self.max_abs is not None else "labels graph (no logits)"
        verdict = "PASS" if self.ok else "FAIL"
        against = f"PyTorch (grid, G={self.grid_points})" if self.grid_points else "PyTorch"
        text = (f"parity vs {against} on {self.images} synthetic scene(s) at {self.size[0]}x{self.size[1]}: {err}, "
                f"argmax agreement {100 * self.agreement:.4f}% (tolerance {self.tolerance:g}) {verdict}")
        if self.output == "labels" and self.confident_mismatches:
            text += f"; {self.confident_mismatches} confidently-labelled pixel(s) changed"
        if self.grid_points and self.exact_agreement is not None:
            exact_err = f"max |logit diff| {self.exact_max_abs:.3g}, " if self.exact_max_abs is not None else ""
            text += (f"\ngrid vs exact attention (PyTorch) on the same scenes: {exact_err}"
                     f"argmax agreement {100 * self.exact_agreement:.4f}%")
        if self.numpy_agreement is not None:
            text += (f"\nraw-frame graph vs the float model on the numpy path (OpenCV resize): label agreement "
                     f"{100 * self.numpy_agreement:.4f}%")
        if self.nonfinite:
            text += f"; {self.nonfinite} output value(s) are NaN or infinite"
        return text


def scene_batch(count: int, size: tuple[int, int], info: ModelInfo, seed: int = 0) -> np.ndarray:
    """``count`` synthetic street scenes, preprocessed as the runtime does: float32 (count, 3, H, W); for a raw-frame
    graph the frames themselves, uint8 (count, H, W, 3)."""
    if info.input_type == "uint8":
        return np.stack([render_scene(seed + i, size)[0] for i in range(count)])
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
    from scaseg.runtime.backends.onnxruntime import make_session

    if images < 1:
        raise ScasegError(f"--parity-images must be at least 1, got {images}")
    if tolerance < 0:
        raise ScasegError(f"--tolerance must be >= 0, got {tolerance}")
    size = tuple(info.input_size or (512, 512))
    batch = 1 if info.dynamic_batch else int(info.batch)
    session = make_session(onnx_path)
    model = model.eval()
    points = int(info.extra.get("export", {}).get("grid_points", 0)) if info.sca_op == "grid" else 0
    max_abs, flipped, exact_abs, nonfinite = 0.0, 0, 0.0, 0
    preds, refs, exact_refs, numpy_refs = [], [], [], []
    # A raw-frame graph is compared at its source size: PyTorch's labels and margins (at the network size) go there.
    up = (lambda maps: _at_source(maps, info)) if info.input_type == "uint8" else (lambda maps: maps)
    runs = -(-images // batch)
    for r in range(runs):
        x = scene_batch(batch, size, info, seed + r * batch)  # type: ignore[arg-type]
        got = session.run([info.output_name], {info.input_name: x})[0]
        ref = _reference(model, x, points or None, info=info)
        # max() and comparisons pass NaN silently (max(0.0, nan) is 0.0): count non-finite values on their own.
        nonfinite += int((~np.isfinite(ref)).sum())
        if np.issubdtype(got.dtype, np.floating):
            nonfinite += int((~np.isfinite(got)).sum())
        ref_labels = up(ref.argmax(axis=1))
        if points:
            exact = _reference(model, x, None, query_chunk=EXACT_REFERENCE_CHUNK, info=info)
            exact_refs.append(up(exact.argmax(axis=1)))
            if info.output != "labels":
                exact_abs = max(exact_abs, float(np.abs(got - exact).max()))
        if info.output == "labels":
            labels = got.astype(np.int64)
            top2 = np.sort(ref, axis=1)[:, -2:]
            margin = up(top2[:, 1] - top2[:, 0])
            flipped += int(((labels != ref_labels) & (margin > 2 * tolerance)).sum())
        else:
            max_abs = max(max_abs, float(np.abs(got - ref).max()))
            labels = up(got.argmax(axis=1))
        if info.input_type == "uint8":
            with _attention(model, points or None):
                numpy_refs.append(np.stack([numpy_path_labels(model, frame, info) for frame in x]))
        preds.append(labels)
        refs.append(ref_labels)
    return ParityReport(
        images=runs * batch, size=(int(size[0]), int(size[1])), output=info.output,
        max_abs=None if info.output == "labels" else max_abs, agreement=label_agreement(preds, refs),
        confident_mismatches=flipped, tolerance=float(tolerance), grid_points=points or None,
        exact_max_abs=None if (not points or info.output == "labels") else exact_abs,
        exact_agreement=label_agreement(preds, exact_refs) if points else None, nonfinite=nonfinite,
        numpy_agreement=label_agreement(preds, numpy_refs) if numpy_refs else None,
    )


def _at_source(maps: np.ndarray, info: ModelInfo) -> np.ndarray:
    """(B, h, w) labels or margins at a raw-frame graph's network size -> its source size, nearest neighbour (as
    the graph brings its labels there)."""
    size = tuple(info.input_size or maps.shape[-2:])
    if maps.shape[-2:] == size:
        return maps
    return np.stack([resize_nearest(m if m.dtype == np.float32 else m.astype(np.int32), size) for m in maps])


def refuse_disagreement(report: ParityReport, tolerance: float) -> None:
    """One sentence when the parity check found non-finite values or a disagreement beyond ``tolerance``."""
    if report.nonfinite:
        raise ScasegError(f"the parity check found {report.nonfinite} NaN or infinite output value(s) (PyTorch or "
                          "ONNX Runtime): the model computes garbage; nothing was written")
    if not report.ok:
        what = (f"max |logit diff| {report.max_abs:.3g}" if report.max_abs is not None
                else f"{report.confident_mismatches} confidently-labelled pixel(s) changed")
        raise ScasegError(f"the ONNX model disagrees with PyTorch beyond --tolerance {tolerance:g} ({what}); "
                          "nothing was written")


@contextlib.contextmanager
def _attention(model: nn.Module, grid_points: Optional[int], query_chunk: Optional[int] = None) -> Iterator[None]:
    """Within the block the model's cores run grid (``grid_points``) or exact attention; left as found afterwards."""
    cores = [m for m in model.modules() if isinstance(m, StripAttentionCore)]
    before = [(c.grid_points, c.query_chunk) for c in cores]
    set_grid_points(model, grid_points)
    if query_chunk:
        set_query_chunk(model, query_chunk)
    try:
        yield
    finally:
        for c, (g, chunk) in zip(cores, before):
            c.grid_points, c.query_chunk = g, chunk


def _reference(model: nn.Module, x: np.ndarray, grid_points: Optional[int], query_chunk: Optional[int] = None,
               info: Optional[ModelInfo] = None) -> np.ndarray:
    """The eval-mode model's logits on ``x`` with grid attention (``grid_points``) or exact; for a raw-frame graph
    (``info``) through its in-graph preprocessing (logits at the network size)."""
    with _attention(model, grid_points, query_chunk), torch.no_grad():
        if info is not None and info.input_type == "uint8":
            return reference_logits(model, x, info)
        return model(torch.from_numpy(x)).float().numpy()  # type: ignore[no-any-return]


def plan_grid(model: nn.Module, info: ModelInfo, size: tuple[int, int], images: int,
              requested: Optional[int] = None, seed: int = 0) -> tuple[int, float]:
    """(G, spread) for a grid export: the logit spread measured on the parity scenes, and the G the rule picks for it.

    Raises ScasegError (one sentence naming the spread and the G needed) when ``requested`` is too few or the rule's
    G is out of reach.
    """
    batches = [torch.from_numpy(scene_batch(1, size, info, seed + i)) for i in range(images)]
    with _attention(model, None, EXACT_REFERENCE_CHUNK):
        spread = measure_spread(model.eval(), batches)
    return grid_points_for(spread, requested), spread
