"""The one small interface every backend implements (ONNX Runtime, OpenVINO, TensorRT, PyTorch)."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Optional

import numpy as np

from scaseg.metadata import ModelInfo


@dataclass(frozen=True)
class InputMetadata:
    """The image input of a loaded model as its graph declares it: name, dtype and shape (None: a dynamic axis)."""

    name: str
    dtype: np.dtype
    shape: tuple[Optional[int], ...]


class Backend(abc.ABC):
    """A loaded model that maps a preprocessed batch to the model's output.

    ``infer`` takes float32 NCHW (already normalised, at the model's input size) and returns
    float32 logits (B, C, H, W) or integer labels (B, H, W), as ``info.output`` says.
    ``get_input_metadata`` says what the graph takes; ``fixed_batch`` and ``fixed_size`` follow from it.
    Backends are context managers; ``close`` releases device memory and sessions.
    """

    #: short name shown in tables: "onnxruntime", "openvino", "tensorrt", "torch"
    name: str = "backend"

    def __init__(self, path: str, info: ModelInfo) -> None:
        self.path = path
        self.info = info

    @property
    def device(self) -> str:
        """Where it runs, in words: "CPU", "CUDA:0", "TensorRT EP"..."""
        return "CPU"

    @property
    def precision(self) -> str:
        """The arithmetic it runs in: the file's precision unless the backend runs it in another (OpenVINO bf16)."""
        return self.info.precision

    @abc.abstractmethod
    def get_input_metadata(self) -> InputMetadata:
        """The image input the loaded graph declares (its real shape, not what the metadata promises)."""

    @property
    def fixed_batch(self) -> Optional[int]:
        """The batch size the graph insists on, or None when it takes any."""
        return self.get_input_metadata().shape[0]

    @property
    def fixed_size(self) -> Optional[tuple[int, int]]:
        """(H, W) the graph insists on, or None when a spatial axis is dynamic."""
        h, w = self.get_input_metadata().shape[-2:]
        return None if h is None or w is None else (h, w)

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; blocks until the result is on the host."""

    def close(self) -> None:
        """Release resources; safe to call twice."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
