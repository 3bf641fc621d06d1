"""Raw-frame graphs (``scaseg-export --input uint8``): the per-pixel work of the runtime, inside the graph.

The graph takes RGB uint8 frames NHWC at a fixed source size and does what runtime/preprocess.py does on the host:
a bilinear stretch to the network size (half-pixel centres; in float, where OpenCV's uint8 resize rounds to whole
levels: rounding in the graph too was tried and moved the int8 label agreement by 0.003 points, so it is left out),
(x - mean) / std with the model's own statistics, and NHWC -> NCHW. With ``--head labels`` the argmax follows and
the label map is brought back to the source size by nearest neighbour (OpenCV's INTER_NEAREST rule:
source index floor(i * in / out)), as uint8 (int32 beyond 256 classes). With ``--head logits`` the logits stay at
the network size (one float per class per pixel at the source size would be far more bytes than the frame).

Channel order: RGB, the order every frame source of the runtime hands over (runtime/sources.py converts OpenCV's
BGR once, while decoding) and the metadata's one ``color``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaseg.metadata import ModelInfo


def labels_dtype(num_classes: int) -> torch.dtype:
    """A label map in the graph: uint8 while the class ids fit, else int32 (TensorRT has no uint16 tensors)."""
    return torch.uint8 if num_classes <= 256 else torch.int32


class RawFrames(nn.Module):
    """(B, H, W, 3) uint8 RGB at the source size -> (B, 3, h, w) float32 normalised at the network size."""

    mean: Tensor  # (1, 3, 1, 1) buffers
    scale: Tensor

    def __init__(self, network_size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.network_size = (int(network_size[0]), int(network_size[1]))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("scale", (1.0 / torch.tensor(std, dtype=torch.float32)).view(1, 3, 1, 1))

    def forward(self, frames: Tensor) -> Tensor:
        x = frames.float().permute(0, 3, 1, 2)  # cast first: TensorRT transposes no uint8 tensor
        if tuple(x.shape[-2:]) != self.network_size:
            x = F.interpolate(x, size=self.network_size, mode="bilinear", align_corners=False)
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
        self.pre = RawFrames(network_size, info.mean, info.std)
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
    pre = RawFrames(info.network_size, info.mean, info.std)
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


__all__ = ["RawFrames", "RawDeployable", "labels_at", "labels_dtype", "example_frames", "reference_logits",
           "numpy_path_labels", "check_raw_options"]
