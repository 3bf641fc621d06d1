"""The one small interface every backend implements (ONNX Runtime, TensorRT, PyTorch)."""
from __future__ import annotations

import abc

import numpy as np

from scaseg.metadata import ModelInfo


class Backend(abc.ABC):
    """A loaded model that maps a preprocessed batch to the model's output.

    ``infer`` takes float32 NCHW (already normalised, at the model's input size) and returns
    float32 logits (B, C, H, W) or integer labels (B, H, W), as ``info.output`` says.
    Backends are context managers; ``close`` releases device memory and sessions.
    """

    #: short name shown in tables: "onnxruntime", "tensorrt", "torch"
    name: str = "backend"

    def __init__(self, path: str, info: ModelInfo) -> None:
        self.path = path
        self.info = info

    @property
    def device(self) -> str:
        """Where it runs, in words: "CPU", "CUDA:0", "TensorRT EP"..."""
        return "CPU"

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; blocks until the result is on the host."""

    def close(self) -> None:
        """Release resources; safe to call twice."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
