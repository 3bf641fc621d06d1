"""ONNX Runtime backend: TensorRT, CUDA or CPU execution providers, metadata read from the model itself; and
``make_session``, the one place an ONNX Runtime session is set up (the runtime, calibration, export parity and the
benchmarks)."""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np
import onnxruntime as ort

from scaseg.runtime.backends.base import (DEVICES, Backend, InputMetadata, RunSettings, check_graph, first_line,
                                          parse_device)
from scaseg.runtime.backends.threads import auto_threads, per_stream
from scaseg.errors import ScasegError
from scaseg.metadata import ModelInfo, read_onnx_metadata
from scaseg.runtime.memory import MemorySettings

_TRT_EP = "TensorrtExecutionProvider"
_CUDA_EP = "CUDAExecutionProvider"
_CPU_EP = "CPUExecutionProvider"

__all__ = ["DEVICES", "OnnxRuntimeBackend", "choose_providers", "make_session", "parse_device"]


def make_session(model: Union[str, bytes, "os.PathLike[str]"], *, threads: Optional[int] = None,
                 providers: Sequence[Any] = (_CPU_EP,), memory: Optional[MemorySettings] = None,
                 log_level: int = 3, optimized_path: Optional[str] = None, profile_prefix: Optional[str] = None,
                 what: Optional[str] = None, spin: bool = True) -> ort.InferenceSession:
    """An ONNX Runtime session (CPU unless ``providers`` say otherwise), with every graph optimisation.

    ``model``: a path or serialized bytes. ``threads``: intra-op threads (None: ONNX Runtime's default).
    ``memory``: arena and memory-pattern settings (None: the library's). ``log_level``: 3 drops ORT's warnings
    (it warns about every unused Constant a rewrite leaves), 4 keeps only fatal ones. ``optimized_path`` saves the
    graph ORT actually runs; ``profile_prefix`` turns on ORT's profiler. ``spin=False``: idle intra-op threads
    sleep instead of spin-waiting (RunSettings.spin). A graph ORT refuses -> one sentence naming ``what`` (default:
    the path, or "the model" for bytes).
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = log_level
    if threads:
        opts.intra_op_num_threads = int(threads)
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if memory is not None:
        opts.enable_cpu_mem_arena = memory.cpu_arena
        opts.enable_mem_pattern = memory.mem_pattern
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    source = model if isinstance(model, bytes) else os.fspath(model)
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own pybind exception types for every load failure
        name = what or ("the model" if isinstance(model, bytes) else f"the ONNX model {os.fspath(model)}")
        raise ScasegError(f"ONNX Runtime cannot load {name}: {first_line(exc)}") from None


def choose_providers(device: Optional[str], available: Sequence[str]) -> list[Any]:
    """Execution providers for a --device choice, best first, given what this onnxruntime build offers."""
    kind, index = parse_device(device)
    gpu_opts = {"device_id": index}
    if kind == "cpu":
        return [_CPU_EP]
    if kind == "cuda":
        if _CUDA_EP not in available:
            raise ScasegError("--device cuda needs onnxruntime-gpu with CUDA (pip install \".[gpu]\" in the scaseg checkout); this onnxruntime offers "
                              + ", ".join(available))
        return [(_CUDA_EP, gpu_opts), _CPU_EP]
    if kind == "tensorrt":
        if _TRT_EP not in available:
            raise ScasegError("--device tensorrt needs onnxruntime-gpu built with the TensorRT execution provider; this "
                              "onnxruntime offers " + ", ".join(available))
        return [(_TRT_EP, gpu_opts)] + ([(_CUDA_EP, gpu_opts)] if _CUDA_EP in available else []) + [_CPU_EP]
    # auto: the fastest provider present, with the others as fallbacks for unsupported nodes.
    chosen: list[Any] = [(p, gpu_opts) for p in (_TRT_EP, _CUDA_EP) if p in available]
    return chosen + [_CPU_EP]


def _dim(d: Any) -> Optional[int]:
    return int(d) if isinstance(d, int) and d > 0 else None


class OnnxRuntimeBackend(Backend):
    """An ONNX file run by onnxruntime; fp32, fp16 and Q/DQ int8 files all load the same way."""

    name = "onnxruntime"

    def __init__(self, path: str, info: Optional[ModelInfo] = None, settings: RunSettings = RunSettings()) -> None:
        self.memory, self.spin = settings.memory, settings.spin
        providers = choose_providers(settings.device, ort.get_available_providers())
        # auto: every core until threads.apply_auto_threads measures
        self.threads = settings.threads or auto_threads()
        self.streams = settings.streams
        if self.streams > 1 and providers[0] != _CPU_EP:
            raise ScasegError(f"--streams {self.streams} runs model calls side by side on the CPU; this run would use "
                              f"{providers[0][0]} (pass --device cpu)")
        self.auto_streams = settings.auto_streams and providers[0] == _CPU_EP
        self._providers = providers
        self.session = self._open(path, providers, self.threads)
        if info is None:
            info = read_onnx_metadata(self.session.get_modelmeta().custom_metadata_map, path)
        super().__init__(path, info)
        self._check_graph()
        self.requested_threads = settings.threads

    def set_threads(self, count: int) -> None:
        """Reopen the session with ``count`` intra-op threads (ONNX Runtime fixes them when a session is made)."""
        if count != self.threads:
            self.threads = count
            self.session = self._open(self.path, self._providers, count)

    def set_streams(self, streams: int) -> None:
        """Reopen the session for ``streams`` calls at once, each on its share of the threads (--streams auto)."""
        threads = self.threads
        assert self.auto_streams and threads is not None and 1 <= streams <= threads, (streams, threads)
        if streams != self.streams:
            self.streams = streams
            self.session = self._open(self.path, self._providers, threads)

    def _open(self, path: str, providers: list[Any], threads: int) -> ort.InferenceSession:
        # Fatal only: a failed run raises an exception that says the same thing (the command prints it as one
        # sentence), and provider fallbacks are reported through .device instead. With several streams, calls run
        # side by side in one session (its run() is thread-safe), each on its share of the threads.
        return make_session(path, threads=per_stream(threads, self.streams), providers=providers, memory=self.memory,
                            log_level=4, spin=self.spin)

    def _check_graph(self) -> None:
        """Compare the graph's real inputs and outputs with what the metadata promises."""
        inputs = {i.name: i for i in self.session.get_inputs()}
        check_graph(self.info, self.path, {n: tuple(_dim(d) for d in i.shape) for n, i in inputs.items()},
                    {o.name: tuple(_dim(d) for d in o.shape) for o in self.session.get_outputs()})
        inp = inputs[self.info.input_name]
        dtype = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8}.get(inp.type, np.float32)
        self._input = InputMetadata(inp.name, np.dtype(dtype), tuple(_dim(d) for d in inp.shape))

    def get_input_metadata(self) -> InputMetadata:
        return self._input

    @property
    def device(self) -> str:
        used = self.session.get_providers()
        return {"TensorrtExecutionProvider": "TensorRT EP", "CUDAExecutionProvider": "CUDA EP"}.get(used[0], "CPU")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        feed = {self.info.input_name: np.ascontiguousarray(batch, dtype=self._input.dtype)}
        try:
            (out,) = self.session.run([self.info.output_name], feed)
        except Exception as exc:
            raise ScasegError(f"ONNX Runtime could not run {self.path} on an input of shape {tuple(batch.shape)}: "
                              f"{first_line(exc)}") from None
        if self.info.output == "logits" and out.dtype != np.float32:
            out = out.astype(np.float32)
        return out

    def close(self) -> None:
        self.__dict__.pop("session", None)
