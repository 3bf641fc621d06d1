"""TensorRT engine runner: name-based I/O, pinned host buffers, async copies on one stream, optional CUDA graph.

NEVER EXECUTED: running an engine needs a GPU and none was lent to this project. This module is type-checked
(mypy against tensorrt-stubs) and the parts that come before the GPU are tested (side file, refusals). See
docs/tensorrt.md.

Order of work when loading, so that a wrong engine costs one sentence and nothing else:
1. the side file ``<engine>.json`` (ModelInfo + TensorRT facts) is read and checked against this machine's
   TensorRT flavor and version and its GPU *before* the plan is deserialised (a plan from another version fails
   opaquely): standard TensorRT wants the same GPU model, TensorRT-RTX a GPU among the compute capabilities it was
   built for;
2. the strip-attention plugin is registered when the engine was built with it (standard TensorRT >= 10.7);
3. the plan is deserialised; I/O tensors are found by name (TensorRT >= 8.5 API: num_io_tensors,
   get_tensor_name/mode/shape/dtype, set_input_shape, set_tensor_address, execute_async_v3);
4. TensorRT-RTX: the execution context gets a runtime cache read from ``<engine>.rtcache`` (the kernels its JIT
   compiled for this GPU on an earlier run) and written back atomically when the runner closes.
"""
from __future__ import annotations

import ctypes
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from scaseg.errors import ScasegError
from scaseg.fileio import atomic_path
from scaseg.metadata import ModelInfo
from scaseg.runtime.backends.base import Backend, InputMetadata
from scaseg.runtime.tensorrt import engine_info, installed
from scaseg.runtime.tensorrt.cuda import NO_GPU, CudaRuntime, Handle, open_device

_LOGGERS: dict[str, Any] = {}


def _trt_logger(trt: installed.TensorRT) -> Any:
    # TensorRT wants one logger per process; every runner shares it.
    if trt.flavor not in _LOGGERS:
        _LOGGERS[trt.flavor] = trt.module.Logger(trt.module.Logger.WARNING)
    return _LOGGERS[trt.flavor]


@dataclass
class _Tensor:
    """One I/O tensor of the engine and the device/pinned-host buffers behind it."""

    name: str
    dtype: np.dtype
    is_input: bool
    engine_shape: tuple[int, ...]  # -1 marks a dynamic axis
    shape: tuple[int, ...] = ()
    capacity: int = 0  # bytes allocated (buffers only grow)
    device_ptr: int = 0
    host_ptr: int = 0
    host: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return int(math.prod(self.shape)) * self.dtype.itemsize


def check_input_shape(shape: tuple[int, ...], engine_shape: tuple[int, ...],
                      profile: Optional[tuple[tuple[int, ...], tuple[int, ...]]], name: str) -> None:
    """Refuse a batch the engine cannot take: static axes must match, dynamic ones lie in the profile's min..max."""
    if len(shape) != len(engine_shape):
        raise ScasegError(f"the engine's input {name} has {len(engine_shape)} axes {engine_shape}, "
                          f"the batch has shape {shape}")
    for axis, (got, want) in enumerate(zip(shape, engine_shape)):
        if want != -1 and got != want:
            raise ScasegError(f"the engine was built for input {name} of shape {engine_shape}, the batch has shape "
                              f"{shape} (axis {axis}); rebuild the engine with a profile that covers it")
    if profile is not None:
        lo, hi = profile
        if any(g < a or g > b for g, a, b in zip(shape, lo, hi)):
            raise ScasegError(f"the batch shape {shape} is outside the engine's profile {lo}..{hi} for {name}; "
                              "rebuild it with a profile (build_engine's min_shape/max_shape) that covers it")


class TensorRTBackend(Backend):
    """A serialized TensorRT engine (``.engine``/``.trt``/``.plan``) plus its ``<engine>.json`` side file."""

    name = "tensorrt"

    def __init__(self, path: str, info: ModelInfo | None = None, *, device: int = 0,
                 cuda_graph: bool = False) -> None:
        self._closed = True  # until everything below succeeded; close() is safe at any point
        self._tensors: dict[str, _Tensor] = {}
        self._stream: Handle = None
        self._graph: Handle = None
        self._graph_exec: Handle = None
        self._context: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        self._runtime_cache: Any = None
        self.cuda: Optional[CudaRuntime] = None
        side: Optional[ModelInfo] = None
        if info is None or engine_info.side_file(path).is_file():
            side = engine_info.read_engine_info(path)
        model_info = info if info is not None else side
        assert model_info is not None  # read_engine_info raised otherwise
        super().__init__(path, model_info)
        self.device_index = int(device)
        self.facts = engine_info.engine_facts(side) if side is not None else {}
        flavor = self.facts.get("trt_flavor")
        self.trt = installed.require_tensorrt(f"the engine {path}", flavor if flavor in installed.FLAVORS else "auto")
        self.trt_version = self.trt.version_text
        try:
            self._load(path, side, cuda_graph)
        except BaseException:
            self.close()
            raise
        self._closed = False

    # --- loading ------------------------------------------------------------------------------------------------

    def _load(self, path: str, side: Optional[ModelInfo], cuda_graph: bool) -> None:
        if TYPE_CHECKING:  # type-checked against tensorrt-stubs; tensorrt_rtx has the same API here
            import tensorrt as trt
        else:
            trt = self.trt.module
        try:
            self.cuda = cuda = open_device(self.device_index)
        except ScasegError as exc:
            hint = ("; a TensorRT engine runs only on an NVIDIA GPU (run the model's ONNX file on the CPU instead)"
                    if str(exc).startswith(NO_GPU) else "")
            raise ScasegError(f"cannot run the engine {path}: {exc}{hint}") from None
        self.gpu_name = cuda.device_name(self.device_index)
        self.compute_capability = cuda.compute_capability(self.device_index)
        if side is not None:
            engine_info.check_engine(path, side, trt=self.trt, gpu_name=self.gpu_name,
                                compute_capability=self.compute_capability)
        self.uses_plugin = bool(self.facts.get("plugin", False))
        self._register_plugin()
        if cuda_graph and self.uses_plugin:
            raise ScasegError("CUDA graphs cannot replay the Python strip-attention plugin this engine uses; open it "
                              "with cuda_graph=False, or build the engine from a --sca-op decomposed ONNX")
        self.cuda_graph = bool(cuda_graph)
        self._graph_failed = False

        self._runtime = trt.Runtime(_trt_logger(self.trt))
        with open(path, "rb") as f:
            plan = f.read()
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise ScasegError(f"{self.trt.label} could not load the engine {path}: the file is damaged or was not "
                              "built by this TensorRT version")
        self._context = self._create_context(path)
        if self._context is None:
            raise ScasegError(f"TensorRT could not create an execution context for {path} (out of GPU memory?)")
        engine = self._engine
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            self._tensors[name] = _Tensor(name, dtype, is_input, shape)
        inputs = [t for t in self._tensors.values() if t.is_input]
        outputs = [t for t in self._tensors.values() if not t.is_input]
        if len(inputs) != 1 or not outputs:
            raise ScasegError(f"the engine {path} has inputs {[t.name for t in inputs]} and outputs "
                              f"{[t.name for t in outputs]}; a SCASeg engine has one image input and an output")
        self._input = inputs[0]
        by_name = {t.name: t for t in outputs}
        self._output = by_name.get(self.info.output_name, outputs[0])
        self._profile: Optional[tuple[tuple[int, ...], tuple[int, ...]]] = None
        if -1 in self._input.engine_shape:
            lo, _opt, hi = engine.get_tensor_profile_shape(self._input.name, 0)
            self._profile = (tuple(int(d) for d in lo), tuple(int(d) for d in hi))
        self._check_metadata()
        self._stream = cuda.stream_create()
        self._shape: tuple[int, ...] = ()

    def _create_context(self, path: str) -> Any:
        """An execution context; on TensorRT-RTX with the runtime cache from ``<engine>.rtcache`` attached."""
        if self.trt.flavor != "rtx":
            return self._engine.create_execution_context()
        engine: Any = self._engine  # the runtime-cache API is TensorRT-RTX's, not in the standard stubs
        config = engine.create_runtime_config()
        cache = config.create_runtime_cache()
        cache_file = engine_info.runtime_cache_file(path)
        if cache_file.is_file() and not cache.deserialize(cache_file.read_bytes()):
            warnings.warn(f"ignoring the runtime cache {cache_file}: {self.trt.label} could not read it",
                          RuntimeWarning, stacklevel=3)
        config.set_runtime_cache(cache)
        self._runtime_cache = cache
        return engine.create_execution_context(config)

    def _save_runtime_cache(self) -> None:
        """Write the runtime cache beside the engine (atomically), so the next run skips the JIT compilation."""
        if self._runtime_cache is None:
            return
        blob = self._runtime_cache.serialize()
        with atomic_path(engine_info.runtime_cache_file(self.path)) as tmp:
            tmp.write_bytes(memoryview(blob))

    def _register_plugin(self) -> None:
        """Register scaseg::StripCrossAttention when the engine may contain it; required when it does."""
        wanted = self.uses_plugin or self.info.sca_op == "function"
        if not wanted or not installed.has_python_plugins(self.trt):
            if self.uses_plugin:
                raise ScasegError(f"the engine {self.path} uses the Python strip-attention plugin, which needs "
                                  f"standard TensorRT >= 10.7; this is {self.trt.label}")
            return
        from scaseg.runtime.tensorrt import plugin

        try:
            plugin.register_strip_attention()
        except ScasegError:
            if self.uses_plugin:
                raise
            # The engine was built with the function inlined: the plugin is not needed to run it.

    def _check_metadata(self) -> None:
        """The side file and the engine must agree on what comes out."""
        out = self._output
        if self.info.output == "logits" and len(out.engine_shape) == 4 and out.engine_shape[1] not in (
                -1, self.info.num_classes):
            raise ScasegError(f"the engine's output {out.name} has {out.engine_shape[1]} channels but its metadata "
                              f"lists {self.info.num_classes} classes; the side file belongs to another model")
        if self.info.output == "labels" and len(out.engine_shape) not in (3, 4):
            raise ScasegError(f"the metadata says the engine returns a label map, but its output {out.name} has "
                              f"shape {out.engine_shape}")

    # --- buffers ------------------------------------------------------------------------------------------------

    def _prepare(self, shape: tuple[int, ...]) -> None:
        """Set the input shape and (re)allocate buffers when the batch shape changes."""
        if shape == self._shape:
            return
        cuda, context = self.cuda, self._context
        assert cuda is not None
        check_input_shape(shape, self._input.engine_shape, self._profile, self._input.name)
        if -1 in self._input.engine_shape and not context.set_input_shape(self._input.name, shape):
            raise ScasegError(f"TensorRT refused the input shape {shape} for {self._input.name}")
        self._drop_graph()
        for tensor in self._tensors.values():
            tensor.shape = shape if tensor.is_input else tuple(int(d) for d in context.get_tensor_shape(tensor.name))
            if any(d < 0 for d in tensor.shape):
                raise ScasegError(f"TensorRT could not infer the shape of {tensor.name} for input shape {shape}")
            if tensor.nbytes > tensor.capacity:
                self._free(tensor)
                tensor.capacity = tensor.nbytes
                tensor.device_ptr = cuda.malloc(tensor.capacity)
                tensor.host_ptr = cuda.malloc_host(tensor.capacity)
            raw = (ctypes.c_ubyte * tensor.capacity).from_address(tensor.host_ptr) if tensor.capacity else None
            flat = np.frombuffer(memoryview(raw), dtype=tensor.dtype) if raw is not None else np.empty(0, tensor.dtype)
            tensor.host = flat[: int(math.prod(tensor.shape))].reshape(tensor.shape)
            if not context.set_tensor_address(tensor.name, tensor.device_ptr):
                raise ScasegError(f"TensorRT refused the buffer address for {tensor.name}")
        self._shape = shape

    def _free(self, tensor: _Tensor) -> None:
        cuda = self.cuda
        tensor.host = None
        if cuda is not None:
            if tensor.device_ptr:
                cuda.free(tensor.device_ptr)
            if tensor.host_ptr:
                cuda.free_host(tensor.host_ptr)
        tensor.device_ptr = tensor.host_ptr = tensor.capacity = 0

    # --- running ------------------------------------------------------------------------------------------------

    def _enqueue(self) -> None:
        """H2D copy, the engine, D2H copies: all asynchronous on the runner's stream."""
        cuda = self.cuda
        assert cuda is not None
        inp = self._input
        cuda.memcpy_htod_async(inp.device_ptr, inp.host_ptr, inp.nbytes, self._stream)
        if not self._context.execute_async_v3(cuda.as_int(self._stream)):
            raise ScasegError(f"TensorRT failed to run the engine {self.path} (see the TensorRT log above)")
        for tensor in self._tensors.values():
            if not tensor.is_input:
                cuda.memcpy_dtoh_async(tensor.host_ptr, tensor.device_ptr, tensor.nbytes, self._stream)

    def _capture(self) -> None:
        """Record one _enqueue into a CUDA graph; on failure keep running without one and say so once."""
        cuda = self.cuda
        assert cuda is not None
        try:
            cuda.begin_capture(self._stream)
            try:
                self._enqueue()
            finally:
                self._graph = cuda.end_capture(self._stream)
            self._graph_exec = cuda.graph_instantiate(self._graph)
        except ScasegError as exc:
            self._drop_graph()
            self._graph_failed = True
            warnings.warn(f"CUDA graph capture failed, running without it: {exc}", RuntimeWarning, stacklevel=3)

    def _drop_graph(self) -> None:
        cuda = self.cuda
        if cuda is None:
            return
        if self._graph_exec is not None:
            cuda.graph_exec_destroy(self._graph_exec)
            self._graph_exec = None
        if self._graph is not None:
            cuda.graph_destroy(self._graph)
            self._graph = None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (float32 NCHW, normalised, at the engine's input size; uint8 NHWC frames for a raw-frame
        engine); returns logits or labels."""
        if self._closed:
            raise ScasegError("this TensorRT backend is closed")
        cuda = self.cuda
        assert cuda is not None
        x = np.asarray(batch)
        raw = self.info.input_type == "uint8"
        if x.ndim != 4 or (x.dtype != np.uint8 if raw else not np.issubdtype(x.dtype, np.floating)):
            want = "a uint8 batch of frames (B, H, W, 3)" if raw else "a float batch of shape (B, 3, H, W)"
            raise ScasegError(f"expected {want}, got {x.dtype} {tuple(x.shape)}")
        self._prepare(tuple(int(d) for d in x.shape))
        assert self._input.host is not None and self._output.host is not None
        np.copyto(self._input.host, x, casting="same_kind")
        if self._graph_exec is not None:
            cuda.graph_launch(self._graph_exec, self._stream)
        else:
            # Without a graph yet, this plain run doubles as the warm-up TensorRT wants before a capture.
            self._enqueue()
        cuda.stream_synchronize(self._stream)
        result = self._output.host.copy()  # the pinned buffer is reused by the next call
        if self.cuda_graph and self._graph_exec is None and not self._graph_failed:
            self._capture()
        if self.info.output == "logits" and result.dtype != np.float32:
            result = result.astype(np.float32)
        return result

    # --- description --------------------------------------------------------------------------------------------

    @property
    def device(self) -> str:
        return f"CUDA:{self.device_index} {getattr(self, 'gpu_name', '')}".strip()

    def get_input_metadata(self) -> InputMetadata:
        """The engine's input: its name, dtype and shape, None where the axis is dynamic (-1 in TensorRT)."""
        inp = self._input
        return InputMetadata(inp.name, inp.dtype, tuple(None if d == -1 else int(d) for d in inp.engine_shape))

    def close(self) -> None:
        """Free device and pinned memory, the graph, the stream, the context and the engine; safe to call twice."""
        cuda = self.cuda
        errors: list[str] = []

        def attempt(fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except ScasegError as exc:  # keep freeing the rest; report once at the end
                errors.append(str(exc))

        if cuda is not None and self._stream is not None:
            attempt(cuda.stream_synchronize, self._stream)
        if not self._closed:
            try:
                self._save_runtime_cache()
            except OSError as exc:  # a read-only model folder: the next run compiles again, nothing else is lost
                errors.append(f"cannot write the runtime cache beside {self.path}: {exc.strerror or exc}")
            except ScasegError as exc:
                errors.append(str(exc))
        self._runtime_cache = None
        attempt(self._drop_graph)
        for tensor in self._tensors.values():
            attempt(self._free, tensor)
        if cuda is not None and self._stream is not None:
            attempt(cuda.stream_destroy, self._stream)
        self._stream = None
        # Context before engine before runtime: each holds on to the next.
        self._context = None
        self._engine = None
        self._runtime = None
        self._closed = True
        if errors:
            warnings.warn("releasing the TensorRT backend: " + "; ".join(errors), RuntimeWarning, stacklevel=2)
