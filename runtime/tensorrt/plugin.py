"""The strip-attention TensorRT plugin ``scaseg::StripCrossAttention``, written in Python with ``tensorrt.plugin``.

An fp32/fp16 ONNX exported with ``--sca-op function`` holds every strip cross-attention as a node of the ONNX
local function ``StripCrossAttention`` (domain ``scaseg``; inputs q (B,h,N,dq), k (B,h,M,dq), v (B,h,M,dv);
output (B,h,N,dv) = softmax(scale * q k^T) v over M; float attribute ``scale``). With TensorRT >= 10.7 and this
plugin registered, the engine builder tags those nodes with ``plugin_namespace="scaseg"`` so that the ONNX parser
imports them as this plugin instead of inlining the function body. TensorRT-RTX has no plugin support
(``tensorrt_rtx.plugin`` does not import in 1.7): its parser always inlines the function.

Where the GPU work comes from: TensorRT hands the implementation device buffers that speak
``__cuda_array_interface__``; CuPy wraps them without a copy and runs the matmuls with cuBLAS on TensorRT's stream.
So the requirement is CuPy (``cupy-cuda12x`` / ``cupy-cuda11x``, or the JetPack wheel) next to TensorRT; no code of
ours is compiled. The runtime may not import torch, which rules out the torch-based recipes. An ahead-of-time
Triton kernel (``trtp.aot_impl``, TensorRT >= 10.9) would remove the Python call per launch but needs Triton,
which JetPack does not ship; it is not implemented.

Memory stays bounded: queries are processed in chunks so that one chunk's logits stay under ``CHUNK_BYTES``
(stage 1 at 1024x2048 is 131072 x 2048 logits per head otherwise). The engine runner never captures an engine
using this plugin in a CUDA graph: CuPy allocates its temporaries from its pool at call time, which a replayed
graph would not redo.

Typing: ``tensorrt-stubs`` does not describe ``tensorrt.plugin``, so the part of it used here is written down as
the ``PluginApi`` Protocol and the imported module is cast to it. This module deliberately does NOT use
``from __future__ import annotations``: ``trtp.register`` inspects real annotation objects
(``issubclass(annotation, TensorDesc)``), so the decorated functions get them through ``__annotations__``.
"""
import importlib
import threading
from typing import Any, Callable, Optional, Protocol, TypeVar, cast

import numpy as np
import numpy.typing as npt

from scaseg.errors import ScasegError
from scaseg.metadata import SCA_DOMAIN, SCA_OP
from scaseg.runtime.tensorrt.installed import PYTHON_PLUGIN_MIN, has_python_plugins, require_tensorrt

NAMESPACE, NAME = SCA_DOMAIN, SCA_OP  # the op the exporter writes is the plugin TensorRT looks up
PLUGIN_ID = f"{NAMESPACE}::{NAME}"
VERSION = "1"
#: Upper bound for one chunk of float32 logits (B*h*chunk*M*4 bytes).
CHUNK_BYTES = 64 * 2**20

F = TypeVar("F", bound=Callable[..., Any])


class PluginApi(Protocol):
    """The part of the ``tensorrt.plugin`` module used here (TensorRT >= 10.7)."""

    TensorDesc: type
    Tensor: type

    def register(self, plugin_id: str, lazy_register: bool = ...) -> Callable[[F], F]: ...

    def impl(self, plugin_id: str) -> Callable[[F], F]: ...

    def autotune(self, plugin_id: str) -> Callable[[F], F]: ...

    def from_shape_expr(self, shape_expr: Any, dtype: Any) -> Any: ...

    def AutoTuneCombination(self, io_types: Optional[str] = ..., layouts: Optional[str] = ...) -> Any: ...


_lock = threading.Lock()
_registered = False


def strip_attention_into(xp: Any, q: Any, k: Any, v: Any, scale: float, out: Any,
                         chunk_bytes: int = CHUNK_BYTES) -> None:
    """out[...] = softmax(scale * q @ k^T, over keys) @ v, in query chunks; ``xp`` is numpy or cupy.

    Shapes: q (B,h,N,dq), k (B,h,M,dq), v (B,h,M,dv), out (B,h,N,dv). Computes in float32 whatever the I/O type.
    """
    batch, heads, n_q = int(q.shape[0]), int(q.shape[1]), int(q.shape[2])
    n_k = int(k.shape[2])
    if n_q == 0:
        return
    kt = xp.swapaxes(k.astype(xp.float32, copy=False), -1, -2)  # B, h, dq, M
    v32 = v.astype(xp.float32, copy=False)
    rows = max(1, int(chunk_bytes) // max(1, batch * heads * n_k * 4))
    for start in range(0, n_q, rows):
        stop = min(n_q, start + rows)
        logits = xp.matmul(q[:, :, start:stop].astype(xp.float32, copy=False), kt)  # B, h, n, M
        logits *= xp.float32(scale)
        logits -= logits.max(axis=-1, keepdims=True)
        xp.exp(logits, out=logits)
        logits /= logits.sum(axis=-1, keepdims=True)
        out[:, :, start:stop] = xp.matmul(logits, v32).astype(out.dtype, copy=False)


def plugin_api() -> PluginApi:
    """Import ``tensorrt.plugin`` (TensorRT >= 10.7) or raise one sentence."""
    trt = require_tensorrt("the strip-attention plugin", "standard")
    if not has_python_plugins(trt):
        raise ScasegError(
            f"the strip-attention plugin needs TensorRT >= {'.'.join(map(str, PYTHON_PLUGIN_MIN))} "
            f"(tensorrt.plugin), this is {trt.label}; export with --sca-op decomposed instead"
        )
    return cast(PluginApi, importlib.import_module("tensorrt.plugin"))


def _cupy() -> Any:
    try:
        return importlib.import_module("cupy")
    except ImportError:
        raise ScasegError(
            "the strip-attention plugin runs its GPU math with CuPy, which is not installed: pip install cupy-cuda12x "
            "(cupy-cuda11x for CUDA 11), or export with --sca-op decomposed"
        ) from None


def _define(trtp: PluginApi) -> None:
    """Register shape/type description, autotune and implementation of the plugin with ``trtp``.

    The three callbacks are left unannotated on purpose: tensorrt.plugin validates whatever annotations they carry.
    """

    def describe(q, k, v, scale):
        # (B, h, N, dq) x (B, h, M, dv) -> (B, h, N, dv); the output takes the query's type.
        shape = (q.shape_expr[0], q.shape_expr[1], q.shape_expr[2], v.shape_expr[3])
        return trtp.from_shape_expr(shape, dtype=q.dtype)

    def autotune(q, k, v, scale, outputs):
        # All four tensors share one type: fp32 everywhere or fp16 everywhere, row-major.
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR")]

    def implement(q, k, v, scale, outputs, stream):
        cp = _cupy()
        with cp.cuda.ExternalStream(int(stream)):
            strip_attention_into(cp, cp.asarray(q), cp.asarray(k), cp.asarray(v), float(np.asarray(scale).ravel()[0]),
                                 cp.asarray(outputs[0]))

    # Only the description needs annotations (register reads them to tell tensors from attributes; autotune and
    # impl take theirs from it). ``scale`` is a 1-element float32 array, not ``float``: the ONNX parser hands float
    # attributes over as FLOAT32 fields, and TensorRT's float() of a 1-element array fails on NumPy >= 2.
    describe.__annotations__ = {"q": trtp.TensorDesc, "k": trtp.TensorDesc, "v": trtp.TensorDesc,
                                "scale": npt.NDArray[np.float32], "return": trtp.TensorDesc}
    trtp.register(PLUGIN_ID)(describe)
    trtp.autotune(PLUGIN_ID)(autotune)
    trtp.impl(PLUGIN_ID)(implement)


def register_strip_attention() -> bool:
    """Register ``scaseg::StripCrossAttention`` with TensorRT (idempotent). Raises ScasegError when impossible.

    Needs TensorRT >= 10.7 and CuPy. Returns True when it registered now, False when it already was.
    """
    global _registered
    with _lock:
        if _registered:
            return False
        trtp = plugin_api()
        _cupy()
        import tensorrt as trt

        existing = trt.get_plugin_registry().get_creator(NAME, VERSION, NAMESPACE)
        if existing is None:
            _define(trtp)
        _registered = True
        return True
