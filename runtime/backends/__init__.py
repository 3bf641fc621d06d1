"""Backends behind one interface, and ``open_backend`` which picks one from the model file's suffix."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from scaseg.runtime.backends.base import Backend
from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".trt", ".engine", ".plan")
TORCH_SUFFIXES = (".pth", ".pt", ".safetensors")
BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")

__all__ = ["Backend", "BACKENDS", "open_backend", "backend_for", "fixed_batch", "fixed_size"]


def backend_for(path: str) -> str:
    """The backend a model file runs on, from its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnxruntime"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    known = ", ".join(ONNX_SUFFIXES + ENGINE_SUFFIXES + TORCH_SUFFIXES)
    raise ScasegError(f"cannot tell what kind of model {path} is: expected a file ending in {known}")


def open_backend(
    path: str | os.PathLike,
    backend: str = "auto",
    *,
    device: Optional[str] = None,
    threads: Optional[int] = None,
    info: Optional[ModelInfo] = None,
) -> Backend:
    """Load a model with the right backend: .onnx -> ONNX Runtime, .trt/.engine/.plan -> TensorRT, .pth/.pt -> PyTorch.

    ``device``: auto | cpu | cuda[:N] | tensorrt. ``info`` overrides (or stands in for missing) model metadata.
    """
    path = str(path)
    if backend not in BACKENDS:
        raise ScasegError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if not os.path.exists(path):
        raise ScasegError(f"model not found: {path}")
    if not os.path.isfile(path):
        raise ScasegError(f"the model path {path} is a folder; expected a model file")
    if not os.access(path, os.R_OK):
        raise ScasegError(f"the model file {path} is not readable")
    kind = backend_for(path) if backend == "auto" else backend
    if kind == "onnxruntime":
        from scaseg.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, info, device=device, threads=threads)
    if kind == "torch":
        from scaseg.runtime.backends.torch import TorchBackend

        return TorchBackend(path, info, device=device, threads=threads)
    return _open_tensorrt(path, info, device)


def _open_tensorrt(path: str, info: Optional[ModelInfo], device: Optional[str]) -> Backend:
    from scaseg.runtime.backends.onnxruntime import parse_device

    dev_kind, index = parse_device(device)
    if Path(path).suffix.lower() not in ENGINE_SUFFIXES:
        raise ScasegError(f"--backend tensorrt runs TensorRT engines ({', '.join(ENGINE_SUFFIXES)}), and {path} is not one: "
                          "build an engine from it with scaseg-export --format engine, or keep --backend auto "
                          "(--device tensorrt runs an .onnx on ONNX Runtime's TensorRT provider)")
    if dev_kind == "cpu":
        raise ScasegError(f"the TensorRT engine {path} runs only on a CUDA GPU, not on --device cpu")
    from scaseg.runtime.tensorrt.runner import TensorRTBackend

    # The runner reads the side file first, then finds TensorRT (one sentence when there is none).
    return TensorRTBackend(path, info, device=index)


def fixed_batch(backend: Backend) -> Optional[int]:
    """The batch size a model's graph insists on, or None when it takes any."""
    if hasattr(backend, "fixed_batch"):  # the backend read its graph: trust it over the metadata
        value = getattr(backend, "fixed_batch")
        return None if value is None else int(value)
    return None if backend.info.dynamic_batch else int(backend.info.batch)


def fixed_size(backend: Backend) -> Optional[tuple[int, int]]:
    """(H, W) a model's graph insists on, or None when its spatial axes are dynamic."""
    if hasattr(backend, "fixed_size"):
        value = getattr(backend, "fixed_size")
        return None if value is None else (int(value[0]), int(value[1]))
    if backend.info.dynamic_spatial or backend.info.input_size is None:
        return None
    return tuple(backend.info.input_size)  # type: ignore[return-value]
