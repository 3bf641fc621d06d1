"""OpenVINO backend: an exported .onnx read by OpenVINO's ONNX front end and compiled for the CPU (torch-free).

``openvino`` is imported only when a model is opened (the optional extra ``pip install ".[openvino]"``).
Precision is OpenVINO's INFERENCE_PRECISION_HINT: ``fp32`` (what the file says, the default) or ``bf16``
(only where the CPU has bf16 arithmetic, AVX512_BF16 or AMX; refused in one sentence elsewhere). A Q/DQ int8
file runs its quantized layers in int8 whatever the hint; OpenVINO compiles the cpu-placement int8 export and
refuses the tensorrt placement (docs/runtime.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from scaseg.errors import ScasegError
from scaseg.metadata import METADATA_KEY, ModelInfo, read_onnx_metadata
from scaseg.runtime.backends.base import Backend, InputMetadata, RunSettings, Shape, check_graph, first_line, parse_device
from scaseg.suffixes import ONNX_SUFFIXES

#: --backend openvino[:PRECISION] -> OpenVINO's INFERENCE_PRECISION_HINT: how OpenVINO computes, not what the file
#: holds (that is scaseg.metadata.PRECISIONS, which has no bf16)
INFERENCE_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
INSTALL_HINT = 'pip install ".[openvino]" in the scaseg checkout'


def import_openvino() -> Any:
    """The openvino module, or one sentence saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise ScasegError(f"--backend openvino needs OpenVINO, which is not installed ({INSTALL_HINT})") from None
    return openvino


def cpu_has_bf16(core: Any) -> bool:
    """Whether OpenVINO's CPU plugin can compute in bf16 on this CPU (it lists BF16 among its capabilities)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _shape(partial: Any) -> Shape:
    return tuple(int(d.get_length()) if d.is_static else None for d in partial)


class OpenVinoBackend(Backend):
    """An ONNX file compiled by OpenVINO for the CPU, in fp32 or bf16; one synchronous infer request."""

    name = "openvino"

    def __init__(self, path: str, info: Optional[ModelInfo] = None, settings: RunSettings = RunSettings(), *,
                 precision: str = "fp32") -> None:
        if Path(path).suffix.lower() not in ONNX_SUFFIXES:
            raise ScasegError(f"--backend openvino runs exported ONNX models (.onnx), and {path} is not one")
        kind, _ = parse_device(settings.device)
        if kind not in ("auto", "cpu"):
            raise ScasegError(f"--backend openvino runs on the CPU; --device {settings.device} is ONNX Runtime's or TensorRT's "
                              "(use --device cpu or auto)")
        if precision not in INFERENCE_PRECISION_HINTS:
            raise ScasegError(f"unknown OpenVINO precision {precision!r}: expected one of {', '.join(INFERENCE_PRECISION_HINTS)}")
        self.threads = self.requested_threads = settings.threads  # None (auto): OpenVINO's own count
        ov = import_openvino()
        core = ov.Core()
        if precision == "bf16" and not cpu_has_bf16(core):
            raise ScasegError("--backend openvino:bf16 needs a CPU with bf16 arithmetic (AVX512_BF16 or AMX); this "
                              "CPU offers " + ", ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
                              + " (use --backend openvino for fp32)")
        try:
            model = core.read_model(path)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own for every read failure
            raise ScasegError(f"OpenVINO cannot read the ONNX model {path}: {first_line(exc)}") from None
        if info is None:
            key = ["framework", METADATA_KEY]  # the ONNX front end keeps metadata_props under "framework"
            entries = {METADATA_KEY: model.get_rt_info(key).astype(str)} if model.has_rt_info(key) else {}
            info = read_onnx_metadata(entries, path)
        super().__init__(path, info)
        inputs = {p.get_any_name(): _shape(p.get_partial_shape()) for p in model.inputs}
        outputs = {p.get_any_name(): _shape(p.get_partial_shape()) for p in model.outputs}
        check_graph(info, path, inputs, outputs)
        dtype = np.dtype(model.input(info.input_name).get_element_type().to_dtype())
        self._input = InputMetadata(info.input_name, dtype, inputs[info.input_name])
        self._precision = precision
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION_HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise ScasegError(f"OpenVINO cannot compile {path} ({self.info.precision} file) for the CPU: "
                              f"{_reason(exc)}") from None
        self._request = self._compiled.create_infer_request()
        self._output = self._compiled.output(info.output_name)

    def get_input_metadata(self) -> InputMetadata:
        return self._input

    @property
    def precision(self) -> str:
        """bf16 when asked for (OpenVINO computes in it), else the file's own precision."""
        return "bf16" if self._precision == "bf16" else self.info.precision

    @property
    def device(self) -> str:
        return "CPU"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=self._input.dtype)
        try:
            result = self._request.infer({self.info.input_name: x})
        except Exception as exc:
            raise ScasegError(f"OpenVINO could not run {self.path} on an input of shape {tuple(batch.shape)}: "
                              f"{_reason(exc)}") from None
        out = np.array(result[self._output])  # a copy: the request's buffer is reused by the next call
        if self.info.output == "logits" and out.dtype != np.float32:
            out = out.astype(np.float32)
        return out

    def close(self) -> None:
        self.__dict__.pop("_request", None)
        self.__dict__.pop("_compiled", None)


def _reason(exc: BaseException) -> str:
    """OpenVINO's message without its "Exception from src/..." location lines: the first line that says why."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith(("Exception from", "Check '", "[ GENERAL_ERROR ]"))]
    return (said[0] if said else first_line(exc))[:300].rstrip(".")
