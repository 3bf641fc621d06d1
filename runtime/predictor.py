"""A backend plus the model's own input conventions: image in, label map at the image's size out.

A raw-frame model (``info.input_type`` uint8, ``scaseg-export --input uint8``) resizes, normalises and transposes in
its graph: prepare() hands an RGB frame of the graph's source size through untouched (a frame of another size is
first resized on the host to the source size, by the predictor's resize policy), run() sends uint8, and a labels
graph answers uint8 labels at the source size, which finish() returns as they are.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from scaseg.runtime.backends import Backend
from scaseg.runtime.sources import Frame
from scaseg.errors import ScasegError
from scaseg.runtime.preprocess import (Geometry, label_dtype, labels_to_source, logits_to_labels, preprocess,
                                      preprocess_planes, resize_image, resize_nearest)


def input_size_for(backend: Backend, imgsz: Optional[Sequence[int]] = None,
                   keep_static_size: bool = False) -> Optional[tuple[int, int]]:
    """The (H, W) images are resized to: the graph's static size, else --imgsz, else the trained size, else native.

    An ``imgsz`` that differs from a static size is refused, unless ``keep_static_size`` (scaseg-bench, where one
    --imgsz applies to a mixed list): then the static size is kept and the caller says so.
    """
    fixed = backend.fixed_size
    if fixed is not None:
        if imgsz is not None and tuple(imgsz) != fixed and not keep_static_size:
            raise ScasegError(f"{backend.path} takes a fixed input of {fixed[0]}x{fixed[1]}; "
                              f"--imgsz {imgsz[0]}x{imgsz[1]} needs a model exported with dynamic spatial axes")
        return fixed
    if imgsz is not None:
        return int(imgsz[0]), int(imgsz[1])
    return tuple(backend.info.input_size) if backend.info.input_size else None  # type: ignore[return-value]


def output_to_labels(output: np.ndarray, geom: Geometry, num_classes: int, to_source: bool = True) -> np.ndarray:
    """One image's model output (C, h, w) logits or (h, w) labels -> label map at the source image's size.

    ``to_source=False``: the labels of the image's content at the network's resolution (the letterbox padding cut
    off, not resized): what an overlay colours before it scales the colours up (runtime/overlay.py).
    """
    if output.ndim == 3:
        labels = logits_to_labels(output)
    else:
        labels = output.astype(label_dtype(num_classes), copy=False)
    if labels.shape != tuple(geom.dst_hw):  # a model that answers at another stride: back to the input grid first
        labels = resize_nearest(labels, geom.dst_hw)
    if not to_source:
        return labels[: geom.content_hw[0], : geom.content_hw[1]]
    return labels_to_source(labels, geom)


class Predictor:
    """Preprocess -> backend -> postprocess, with the size and batch rules of one model."""

    def __init__(self, backend: Backend, imgsz: Optional[Sequence[int]] = None, batch: Optional[int] = None,
                 resize: Optional[str] = None, keep_static_size: bool = False) -> None:
        """``resize``: "letterbox" or "stretch" instead of the model's own policy (``info.resize``).

        ``keep_static_size``: a static graph keeps its size over a differing ``imgsz`` (``imgsz_ignored`` says so).
        """
        self.backend = backend
        self.info = backend.info
        self.resize = resize or self.info.resize
        self.size = input_size_for(backend, imgsz, keep_static_size)
        self.imgsz_ignored = imgsz is not None and self.size != tuple(imgsz)
        self.fixed_batch = backend.fixed_batch
        if batch is not None and batch < 1:
            raise ScasegError(f"--batch must be at least 1, got {batch}")
        if batch is not None and self.fixed_batch is not None and batch != self.fixed_batch:
            raise ScasegError(f"{backend.path} has a fixed batch size of {self.fixed_batch}; "
                              f"--batch {batch} needs a model exported with a dynamic batch axis")
        self.batch = batch or self.fixed_batch or 1

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """RGB uint8 image -> (3, H, W) float32 network input and its Geometry; for a raw-frame model the (H, W, 3)
        uint8 frame itself (resized on the host only when its size differs from the graph's)."""
        if self.info.input_type == "uint8":
            hw = (int(image.shape[0]), int(image.shape[1]))
            if hw == self.size:
                return image, Geometry(hw, hw, hw)
            return resize_image(image, self.size, self.resize)
        return preprocess(image, self.size, self.info.mean, self.info.std, self.resize)

    def prepare_frame(self, frame: Frame) -> tuple[np.ndarray, Geometry]:
        """prepare() for a decoded Frame: one given as I420 planes is resized plane by plane and converted to RGB only
        at the network's size (preprocess_planes), unless the graph itself takes raw frames."""
        if frame.planes is not None and self.info.input_type != "uint8":
            return preprocess_planes(frame.planes, self.size, self.info.mean, self.info.std, self.resize)
        assert frame.image is not None
        return self.prepare(frame.image)

    def run(self, tensors: Sequence[np.ndarray]) -> np.ndarray:
        """Stack (3, H, W) inputs (raw frames: (H, W, 3) uint8) into one call; pads to a fixed batch and returns only
        the real rows."""
        batch = np.stack(tensors) if len(tensors) > 1 else tensors[0][None]
        n = batch.shape[0]
        if self.fixed_batch is not None and n < self.fixed_batch:
            pad = np.zeros((self.fixed_batch - n,) + batch.shape[1:], dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        return self.backend.infer(batch)[:n]

    def finish(self, output: np.ndarray, geom: Geometry, to_source: bool = True) -> np.ndarray:
        """One row of run()'s result -> label map at the source size (``to_source=False``: see output_to_labels)."""
        return output_to_labels(output, geom, self.info.num_classes, to_source)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Segment one RGB image: label map (H, W) at its own size."""
        tensor, geom = self.prepare(image)
        return self.finish(self.run([tensor])[0], geom)
