"""Raw-frame graphs (``scaseg-export --input uint8``): the per-pixel work of the runtime, inside the graph.

The graph takes RGB uint8 frames NHWC at a fixed source size and does what runtime/preprocess.py does on the host:
the bilinear stretch to the network size exactly as OpenCV's ``cv2.resize(INTER_LINEAR)`` computes it on uint8
images (``opencv_taps``: half-pixel centres, weights in 1/2048 steps, the vertical pass in OpenCV's fixed-point
arithmetic; integer ops on int32, so the graph's resized image equals the host's bit for bit), (x - mean) / std with
the model's own statistics, and NHWC -> NCHW. With ``--head labels`` the argmax follows and
the label map is brought back to the source size by nearest neighbour (OpenCV's INTER_NEAREST rule:
source index floor(i * in / out)), as uint8 (int32 beyond 256 classes). With ``--head logits`` the logits stay at
the network size (one float per class per pixel at the source size would be far more bytes than the frame).

Channel order: RGB, the order every frame source of the runtime hands over (runtime/sources.py converts OpenCV's
BGR once, while decoding) and the metadata's one ``color``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaseg.metadata import ModelInfo


def labels_dtype(num_classes: int) -> torch.dtype:
    """A label map in the graph: uint8 while the class ids fit, else int32 (TensorRT has no uint16 tensors)."""
    return torch.uint8 if num_classes <= 256 else torch.int32


COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: linear weights in steps of 1/2048


def opencv_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps along one axis of ``src`` samples resized to ``dst``: (first index, second index,
    first weight, second weight), the weights whole numbers summing to 2048. As OpenCV's resize computes them: the
    half-pixel centre ``(d + 0.5) * scale - 0.5`` in float32, its floor and fraction, clamped to the edge samples
    (weight 2048 on the edge), each weight rounded to the nearest step (ties to even, as cvRound)."""
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(f).astype(np.int64)
    f = (f - first).astype(np.float32)
    low, high = first < 0, first >= src - 1
    f[low | high] = 0
    first = np.clip(first, 0, src - 1)
    second = np.minimum(first + 1, src - 1)
    one = np.float32(1 << COEF_BITS)
    w0 = np.rint((np.float32(1) - f) * one).astype(np.int64)
    w1 = np.rint(f * one).astype(np.int64)
    return first, second, w0, w1


def opencv_resize(frames: Tensor, size: tuple[int, int], taps: Sequence[Tensor]) -> Tensor:
    """(B, H, W, C) int32 -> (B, h, w, C) int32, ``cv2.resize(..., INTER_LINEAR)`` of uint8 images bit for bit: the
    horizontal pass sums sample x weight (at most 255 x 2048), the vertical pass is OpenCV's vectorised fixed-point
    ``((a >> 4) * b0 >> 16) + ((c >> 4) * b1 >> 16) + 2 >> 2`` (all values non-negative, so // is the shift).
    ``taps``: the rows of both vertical taps (2h), the two column indices, their weights (1, 1, w, 1) and the two row
    weights (1, h, 1, 1), from ``opencv_taps``."""
    rows, col0, col1, wx0, wx1, wy0, wy1 = taps
    h = size[0]
    x = frames.index_select(1, rows)  # only the 2h rows the vertical pass reads
    x = x.index_select(2, col0) * wx0 + x.index_select(2, col1) * wx1
    return ((x[:, :h] // 16) * wy0 // 65536 + (x[:, h:] // 16) * wy1 // 65536 + 2) // 4


class RawFrames(nn.Module):
    """(B, H, W, 3) uint8 RGB at the source size -> (B, 3, h, w) float32 normalised at the network size."""

    mean: Tensor  # (1, 3, 1, 1) buffers
    scale: Tensor

    def __init__(self, network_size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...],
                 source_size: tuple[int, int]) -> None:
        super().__init__()
        self.network_size = (int(network_size[0]), int(network_size[1]))
        self.source_size = (int(source_size[0]), int(source_size[1]))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("scale", (1.0 / torch.tensor(std, dtype=torch.float32)).view(1, 3, 1, 1))
        (h, w), (sh, sw) = self.network_size, self.source_size
        y0, y1, wy0, wy1 = opencv_taps(sh, h)
        x0, x1, wx0, wx1 = opencv_taps(sw, w)
        i32 = torch.int32
        taps = [torch.from_numpy(np.concatenate([y0, y1])), torch.from_numpy(x0), torch.from_numpy(x1),
                torch.tensor(wx0, dtype=i32).view(1, 1, w, 1), torch.tensor(wx1, dtype=i32).view(1, 1, w, 1),
                torch.tensor(wy0, dtype=i32).view(1, h, 1, 1), torch.tensor(wy1, dtype=i32).view(1, h, 1, 1)]
        for i, tap in enumerate(taps):  # buffers (not saved): they follow the module's device
            self.register_buffer(f"tap{i}", tap, persistent=False)

    @property
    def taps(self) -> list[Tensor]:
        return [getattr(self, f"tap{i}") for i in range(7)]

    def forward(self, frames: Tensor) -> Tensor:
        if tuple(frames.shape[1:3]) != self.source_size:
            raise ValueError(f"frames of {tuple(frames.shape[1:3])}, not the source size {self.source_size}")
        x = frames.to(torch.int32)  # integer work first: TensorRT runs nothing on uint8 but casts
        if self.source_size != self.network_size:
            x = opencv_resize(x, self.network_size, self.taps)
        x = x.float().permute(0, 3, 1, 2)
        return (x - self.mean) * self.scale


def labels_at(labels: Tensor, source_size: tuple[int, int], num_classes: int) -> Tensor:
    """(B, h, w) integer labels -> (B, H, W) at the source size, nearest neighbour, in the graph's label dtype."""
    if tuple(labels.shape[-2:]) != tuple(source_size):
        labels = F.interpolate(labels[:, None].float(), size=tuple(source_size), mode="nearest")[:, 0]
    return labels.to(labels_dtype(num_classes))


class RawDeployable(nn.Module):
    """The raw-frame graph: frames -> RawFrames -> model -> logits at the network size, or labels at the source size."""

    def __init__(self, model: nn.Module, info: ModelInfo, network_size: tuple[int, int],
                 source_size: tuple[int, int], output: str) -> None:
        super().__init__()
        self.model = model
        self.pre = RawFrames(network_size, info.mean, info.std, source_size)
        self.source_size = (int(source_size[0]), int(source_size[1]))
        self.num_classes = int(info.num_classes)
        self.output = output

    def forward(self, frames: Tensor) -> Tensor:
        logits = self.model(self.pre(frames))
        if self.output == "labels":
            return labels_at(logits.argmax(dim=1), self.source_size, self.num_classes)
        return logits


def example_frames(batch: int, source_size: tuple[int, int]) -> Tensor:
    """The tracing input: random uint8 frames (B, H, W, 3)."""
    return torch.randint(0, 256, (batch, *source_size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def reference_logits(model: nn.Module, frames: np.ndarray, info: ModelInfo) -> np.ndarray:
    """PyTorch's logits (B, K, h, w) at the network size for uint8 ``frames`` through the same in-graph
    preprocessing (the parity reference)."""
    assert info.network_size is not None
    pre = RawFrames(info.network_size, info.mean, info.std, frames.shape[1:3])
    with torch.no_grad():
        return model(pre(torch.from_numpy(np.ascontiguousarray(frames)))).float().numpy()  # type: ignore[no-any-return]


def numpy_path_labels(model: nn.Module, image: np.ndarray, info: ModelInfo) -> np.ndarray:
    """The float model on the runtime's numpy path (runtime/preprocess.py at the network size, argmax, labels back
    to the image's size): what a raw-frame graph's labels are measured against."""
    from scaseg.runtime.predictor import output_to_labels
    from scaseg.runtime.preprocess import preprocess

    assert info.network_size is not None
    x, geom = preprocess(image, info.network_size, info.mean, info.std, "stretch")
    with torch.no_grad():
        logits = model(torch.from_numpy(x)[None]).float().numpy()[0]
    return output_to_labels(logits, geom, int(info.num_classes))


def check_raw_options(info: ModelInfo) -> None:
    """A model whose resize policy is letterbox cannot be stretched in the graph: one sentence."""
    from scaseg.errors import ScasegError

    if info.resize != "stretch":
        raise ScasegError(f"--input uint8 stretches frames to the network size in the graph, but this model's resize "
                          f"policy is {info.resize}; export it with --input float")


__all__ = ["opencv_taps", "opencv_resize", "RawFrames", "RawDeployable", "labels_at", "labels_dtype", "example_frames", "reference_logits",
           "numpy_path_labels", "check_raw_options"]
