"""Backends behind one interface, and ``open_backend`` which picks one from the model file's suffix.

A backend name is a runtime, optionally with the precision it computes in: ``openvino:bf16`` is OpenVINO with
bf16 inference precision (``openvino`` alone runs the file's own precision).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from scaseg.cli import require_file, require_utf8
from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo
from scaseg.runtime.backends.base import Backend, InputMetadata, RunSettings, parse_device
from scaseg.runtime.memory import Memory, apply_process_settings
from scaseg.suffixes import CHECKPOINT_SUFFIXES as TORCH_SUFFIXES, ENGINE_SUFFIXES, ONNX_SUFFIXES

BACKENDS = ("auto", "onnxruntime", "openvino", "openvino:bf16", "tensorrt", "torch")

__all__ = ["Backend", "BACKENDS", "InputMetadata", "ModelFile", "RunSettings", "model_file", "open_backend",
           "backend_for"]


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


@dataclass(frozen=True)
class ModelFile:
    """A model path checked once, at the edge: it exists, is a file and can be read (made by ``model_file``)."""

    path: str


def model_file(path: str | os.PathLike) -> ModelFile:
    """Check a model path (exists, a file, readable) and return it as a ModelFile; one sentence otherwise."""
    return ModelFile(require_file(path, "model"))


def open_backend(
    model: str | os.PathLike | ModelFile,
    backend: str = "auto",
    *,
    device: Optional[str] = None,
    threads: Optional[int | str] = None,
    info: Optional[ModelInfo] = None,
    memory: Memory = None,
    settings: Optional[RunSettings] = None,
) -> Backend:
    """Load a model with the right backend: .onnx -> ONNX Runtime, .trt/.engine/.plan -> TensorRT, .pth/.pt -> PyTorch.

    ``model``: a path (checked here) or a ModelFile the caller checked already. ``backend``: one of BACKENDS
    (``openvino`` only when asked for). ``info`` overrides (or stands in for missing) model metadata.
    ``settings``: device, threads and memory as a command checked them at its edge; a library caller may pass
    ``device`` (auto | cpu | cuda[:N] | tensorrt), ``threads`` (auto or a count) and ``memory`` (lean | fast |
    minimal | MemorySettings) instead, checked here the same way (RunSettings.parse), never both.
    """
    if settings is None:
        settings = RunSettings.parse(device, threads, memory)
    else:
        assert device is None and threads is None and memory is None, "pass settings or its parts, not both"
    if backend not in BACKENDS:
        raise ScasegError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    path = (model if isinstance(model, ModelFile) else model_file(model)).path
    kind = backend_for(path) if backend == "auto" else backend
    if settings.streams > 1 and kind != "onnxruntime":
        raise ScasegError(f"--streams {settings.streams} runs model calls side by side on ONNX Runtime's CPU provider; "
                          f"{path} runs on the {kind} backend, one call at a time")
    if kind != "torch":  # ONNX Runtime, OpenVINO and TensorRT open the file by name (PyTorch reads a Python file)
        require_utf8(path, "the model")
    apply_process_settings(settings.memory)
    if kind == "onnxruntime":
        from scaseg.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, info, settings)
    if kind.startswith("openvino"):
        from scaseg.runtime.backends.openvino import OpenVinoBackend

        precision = kind.partition(":")[2] or "fp32"
        return OpenVinoBackend(path, info, settings, precision=precision)
    if kind == "torch":
        from scaseg.runtime.backends.torch import TorchBackend

        return TorchBackend(path, info, settings)
    return _open_tensorrt(path, info, settings.device)


def _open_tensorrt(path: str, info: Optional[ModelInfo], device: str) -> Backend:
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
